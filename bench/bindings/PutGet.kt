// The Kotlin side of bench/bindings.sh: N put+get pairs of a 1 KiB document through the
// Kotlin bindings. Prints `figure bindings_kotlin_put_get_us MICROSECONDS us`.

import fieldvault.*
import java.nio.file.Files

fun main(args: Array<String>) {
    val n = args.getOrNull(0)?.toInt() ?: 2000
    val dir = Files.createTempDirectory("fv-bench").toFile()
    Vault.initWithPassphrase(dir.resolve("v").path, "default", "marble quokka seventy umbrella bench", 600uL).use { v ->
        val body = "{\"text\":\"" + "x".repeat(1012) + "\"}"
        // A first round, as in every language's side: the JIT warms up on it.
        for (i in 0 until n) { v.put("warm", "d$i", body); v.get("warm", "d$i") }
        val start = System.nanoTime()
        for (i in 0 until n) {
            v.put("bench", "d$i", body)
            check(v.get("bench", "d$i") != null)
        }
        val per = (System.nanoTime() - start) / 1000.0 / n
        println("figure bindings_kotlin_put_get_us ${"%.1f".format(per)} us")
    }
    dir.deleteRecursively()
}
