// The Kotlin bindings against the library and the real fieldvault-server on loopback
// (started by crates/ffi/tests/it/kotlin.rs). A small runner: no test framework to install.

import fieldvault.*
import java.io.File
import java.nio.file.Files
import kotlinx.coroutines.runBlocking
import kotlin.system.exitProcess

/** An app keystore written in Kotlin: refuses the next prompt when told to, as a cancelled
 *  biometric prompt would. */
class PromptingKeystore : Keystore {
    val entries = HashMap<String, ByteArray>()
    var cancelNext = false

    override fun store(entry: String, secret: ByteArray) {
        entries[entry] = secret.copyOf()
    }

    override fun load(entry: String): ByteArray {
        if (cancelNext) {
            cancelNext = false
            throw KeystoreException.Cancelled()
        }
        return entries[entry] ?: throw KeystoreException.NotFound()
    }

    override fun delete(entry: String) {
        entries.remove(entry)
    }
}

/** Keeps both texts of a note edited on two devices, the server's first. */
class KeepBothTexts : ConflictMerger {
    override fun merge(localJson: String, serverJson: String): String {
        return "{\"text\":\"${textOf(serverJson)} | ${textOf(localJson)}\"}"
    }
}

val tmp: File = Files.createTempDirectory(File(System.getenv("FIELDVAULT_TEST_TMP") ?: "/tmp").toPath(), "kt").toFile()
var dirs = 0
fun newDir(): String = File(tmp, "v${dirs++}").path

fun check(ok: Boolean, what: String) {
    if (!ok) throw AssertionError(what)
}

inline fun <reified E : Throwable> expect(block: () -> Unit) {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}, nothing was thrown")
}

fun env(name: String): String = System.getenv(name) ?: throw AssertionError("$name is not set")

fun textOf(json: String): String = Regex("\"text\":\"([^\"]*)\"").find(json)!!.groupValues[1]

fun device(ks: Keystore, name: String): Pair<Vault, LoginResult> {
    val v = Vault.init(newDir(), "default", ks, 600uL)
    val login = runBlocking {
        v.login(env("FIELDVAULT_TEST_SERVER_URL"), listOf(env("FIELDVAULT_TEST_SERVER_PIN")),
            env("FIELDVAULT_TEST_USER"), env("FIELDVAULT_PASSWORD"), name)
    }
    return Pair(v, login)
}

val tests = listOf<Pair<String, () -> Unit>>(
    "a Kotlin keystore that refuses once, then allows" to {
        val ks = PromptingKeystore()
        val dir = newDir()
        Vault.init(dir, "default", ks, 600uL).use { it.put("notes", "n1", "{\"text\":\"hi\"}") }
        Vault.open(dir, "default", 600uL).use { v ->
            ks.cancelNext = true
            expect<FieldvaultException.Cancelled> { v.unlock(ks) }
            v.unlock(ks)
            check(v.get("notes", "n1")!!.json == "{\"text\":\"hi\"}", "the document is back")
        }
    },
    "documents page and errors arrive as typed exceptions" to {
        Vault.init(newDir(), "default", PromptingKeystore(), 600uL).use { v ->
            for (i in 0 until 5) v.put("visits", "v$i", "{\"i\":$i}")
            val first = v.list("visits", 3u, null)
            check(first.documents.map { it.id } == listOf("v0", "v1", "v2"), "first page")
            check(v.list("visits", 3u, first.next).documents.size == 2, "second page")
            expect<FieldvaultException.Invalid> { v.put("visits", "x", "[1]") }
            expect<FieldvaultException.AuthRequired> { v.whoami() }
            v.lock()
            expect<FieldvaultException.Locked> { v.get("visits", "v0") }
        }
    },
    "an object used after close is a typed error, not a crash" to {
        val v = Vault.init(newDir(), "default", PromptingKeystore(), 600uL)
        v.close()
        expect<IllegalStateException> { v.get("notes", "n1") }
    },
    "a keystore prompt that never returns is Cancelled after the timeout" to {
        val release = java.util.concurrent.CountDownLatch(1)
        val inner = PromptingKeystore()
        val stuck = object : Keystore by inner {
            override fun load(entry: String): ByteArray {
                release.await()
                return inner.load(entry)
            }
        }
        val dir = newDir()
        Vault.init(dir, "default", stuck, 600uL).use {}
        Vault.open(dir, "default", 600uL).use { v ->
            setKeystoreTimeoutSecs(1uL)
            try {
                expect<FieldvaultException.Cancelled> { v.unlock(stuck) }
            } finally {
                setKeystoreTimeoutSecs(120uL)
                release.countDown()
            }
            v.unlock(stuck)
        }
    },
    "a Kotlin merger that throws loses nothing" to {
        val (one, _) = device(PromptingKeystore(), "phone")
        val (two, _) = device(PromptingKeystore(), "tablet")
        one.put("drafts", "d1", "{\"text\":\"a\"}")
        runBlocking { one.sync(null); two.sync(null) }
        one.put("drafts", "d1", "{\"text\":\"phone\"}")
        two.put("drafts", "d1", "{\"text\":\"tablet\"}")
        val throwing = object : ConflictMerger {
            override fun merge(localJson: String, serverJson: String): String = throw IllegalStateException("no")
        }
        val report = runBlocking { one.sync(null); two.sync(throwing) }
        check(report.mergeFailures == 1u, "the failure is counted: $report")
        check(textOf(two.get("drafts", "d1")!!.json) == "tablet", "this device's version is kept")
        check(two.conflicts().any { it.id == "d1" }, "the server's version is kept to resolve")
        one.close()
        two.close()
    },
    "two devices converge, a conflict merged in Kotlin, a remote wipe is Wiped" to {
        val (one, _) = device(PromptingKeystore(), "phone")
        val (two, loginTwo) = device(PromptingKeystore(), "tablet")
        one.put("notes", "n1", "{\"text\":\"first\"}")
        runBlocking { one.sync(null); two.sync(null) }
        check(textOf(two.get("notes", "n1")!!.json) == "first", "the tablet has the phone's note")
        one.put("notes", "n1", "{\"text\":\"phone\"}")
        two.put("notes", "n1", "{\"text\":\"tablet\"}")
        val report = runBlocking { one.sync(null); two.sync(KeepBothTexts()) }
        check(report.conflicts == 1uL && report.mergeFailures == 0u, "one conflict, merged: $report")
        runBlocking { two.sync(null); one.sync(null) }
        check(textOf(one.get("notes", "n1")!!.json) == "phone | tablet", "converged: ${one.get("notes", "n1")!!.json}")
        val wipe = ProcessBuilder(env("FIELDVAULT_TEST_SERVER_BIN"), "device", "wipe", loginTwo.deviceId,
            "--data", env("FIELDVAULT_TEST_SERVER_DATA")).start()
        check(wipe.waitFor() == 0, "device wipe")
        expect<FieldvaultException.Wiped> { runBlocking { two.sync(null) } }
        one.close()
        two.close()
    },
)

fun main() {
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            passed++
            println("ok   $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
        }
    }
    println("Kotlin suite: $passed passed, $failed failed")
    tmp.deleteRecursively()
    exitProcess(if (failed == 0) 0 else 1)
}
