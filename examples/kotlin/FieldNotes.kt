// Field notes: a small offline-first notes app on the Fieldvault SDK's Kotlin bindings, the
// same flow as examples/python/field_notes.py. Run it with examples/kotlin/run.sh:
//
//   export FIELDVAULT_PASSPHRASE='a passphrase you will remember' FIELDVAULT_PASSWORD='...'
//   examples/kotlin/run.sh --vault DIR login --server URL --user NAME --pin PIN
//   examples/kotlin/run.sh --vault DIR add "pump 3 leaks"
//   examples/kotlin/run.sh --vault DIR list
//   examples/kotlin/run.sh --vault DIR sync
//
// DIR holds the vault (DIR/vault) and this app's keystore (DIR/keystore.properties), written
// in Kotlin as an Android app writes its own over Android Keystore: the vault's secret sealed
// under the passphrase (PBKDF2 and AES-GCM from the JDK); typing the passphrase stands in for
// the user-presence prompt.

import fieldvault.*
import java.io.File
import java.security.SecureRandom
import java.util.Base64
import java.util.Properties
import java.util.UUID
import javax.crypto.AEADBadTagException
import javax.crypto.Cipher
import javax.crypto.SecretKeyFactory
import javax.crypto.spec.GCMParameterSpec
import javax.crypto.spec.PBEKeySpec
import javax.crypto.spec.SecretKeySpec
import kotlin.system.exitProcess
import kotlinx.coroutines.runBlocking

const val ACCOUNT = "default"
const val IDLE_LOCK_SECS = 300uL

class PassphraseFileKeystore(private val file: File) : Keystore {
    private fun passphrase(): CharArray =
        System.getenv("FIELDVAULT_PASSPHRASE")?.toCharArray() ?: throw KeystoreException.Cancelled()

    private fun cipher(mode: Int, salt: ByteArray, nonce: ByteArray, entry: String): Cipher {
        val spec = PBEKeySpec(passphrase(), salt, 600_000, 256)
        val key = SecretKeySpec(SecretKeyFactory.getInstance("PBKDF2WithHmacSHA256").generateSecret(spec).encoded, "AES")
        spec.clearPassword()
        return Cipher.getInstance("AES/GCM/NoPadding").apply {
            init(mode, key, GCMParameterSpec(128, nonce))
            updateAAD(entry.toByteArray())
        }
    }

    override fun store(entry: String, secret: ByteArray) {
        val rng = SecureRandom()
        val salt = ByteArray(16).also(rng::nextBytes)
        val nonce = ByteArray(12).also(rng::nextBytes)
        val sealed = cipher(Cipher.ENCRYPT_MODE, salt, nonce, entry).doFinal(secret)
        val b64 = Base64.getEncoder()
        val props = Properties().apply {
            setProperty("entry", entry)
            setProperty("salt", b64.encodeToString(salt))
            setProperty("nonce", b64.encodeToString(nonce))
            setProperty("sealed", b64.encodeToString(sealed))
        }
        val tmp = File(file.path + ".tmp")
        tmp.outputStream().use { out -> props.store(out, null); out.fd.sync() }
        tmp.setReadable(false, false); tmp.setReadable(true, true)
        if (!tmp.renameTo(file)) throw KeystoreException.Failed("cannot write ${file.name}")
    }

    override fun load(entry: String): ByteArray {
        if (!file.exists()) throw KeystoreException.NotFound()
        val props = Properties().apply { file.inputStream().use { load(it) } }
        if (props.getProperty("entry") != entry) throw KeystoreException.NotFound()
        val b64 = Base64.getDecoder()
        return try {
            cipher(Cipher.DECRYPT_MODE, b64.decode(props.getProperty("salt")), b64.decode(props.getProperty("nonce")), entry)
                .doFinal(b64.decode(props.getProperty("sealed")))
        } catch (e: AEADBadTagException) {
            throw KeystoreException.Cancelled() // a wrong passphrase confirms no one
        }
    }

    override fun delete(entry: String) {
        file.delete()
    }
}

fun openVault(state: File, create: Boolean): Vault {
    val keystore = PassphraseFileKeystore(File(state, "keystore.properties"))
    val dir = File(state, "vault")
    if (create && !dir.exists()) {
        state.mkdirs()
        return Vault.init(dir.path, ACCOUNT, keystore, IDLE_LOCK_SECS)
    }
    return Vault.open(dir.path, ACCOUNT, IDLE_LOCK_SECS).also { it.unlock(keystore) }
}

fun fail(message: String): Nothing {
    System.err.println("field-notes: $message")
    exitProcess(1)
}

fun usage(): Nothing = fail(
    "usage: run.sh --vault DIR (login --server URL --user NAME --pin PIN [--pin PIN] | add TEXT | list | sync)"
)

fun main(args: Array<String>) {
    if (args.size < 3 || args[0] != "--vault") usage()
    val state = File(args[1])
    val command = args[2]
    val rest = args.drop(3)
    fun option(name: String): List<String> = rest.withIndex().filter { it.value == name }.mapNotNull { rest.getOrNull(it.index + 1) }
    try {
        openVault(state, create = command == "login").use { vault ->
            when (command) {
                "login" -> {
                    val server = option("--server").singleOrNull() ?: usage()
                    val user = option("--user").singleOrNull() ?: usage()
                    val pins = option("--pin").ifEmpty { usage() }
                    val password = System.getenv("FIELDVAULT_PASSWORD") ?: fail("set FIELDVAULT_PASSWORD to the sync server's password")
                    val r = runBlocking { vault.login(server, pins, user, password, "field-notes-kotlin") }
                    println("logged in as ${r.user}, device ${r.deviceId}")
                }
                "add" -> {
                    val text = rest.singleOrNull() ?: usage()
                    val id = UUID.randomUUID().toString()
                    val escaped = text.replace("\\", "\\\\").replace("\"", "\\\"")
                    vault.put("notes", id, "{\"text\":\"$escaped\",\"at\":${System.currentTimeMillis() / 1000}}")
                    println("added $id")
                }
                "list" -> {
                    var after: String? = null
                    do {
                        val page = vault.list("notes", 100u, after)
                        for (doc in page.documents) {
                            val text = Regex("\"text\":\"((?:[^\"\\\\]|\\\\.)*)\"").find(doc.json)?.groupValues?.get(1) ?: ""
                            println("${doc.id}  ${text.replace("\\\"", "\"").replace("\\\\", "\\")}")
                        }
                        after = page.next
                    } while (after != null)
                }
                "sync" -> {
                    val r = runBlocking { vault.sync(null) }
                    println("sent ${r.pushed}, received ${r.pulled}, conflicts ${r.conflicts}")
                }
                else -> usage()
            }
        }
    } catch (e: FieldvaultException.Cancelled) {
        fail("the keystore did not open (set FIELDVAULT_PASSPHRASE to the vault's passphrase)")
    } catch (e: FieldvaultException.NotFound) {
        fail("no vault in $state; run login first")
    } catch (e: FieldvaultException.Offline) {
        fail("the server cannot be reached; your notes stay here until the next sync")
    } catch (e: FieldvaultException.AuthRequired) {
        fail("log in (again) first")
    } catch (e: FieldvaultException) {
        fail(e::class.simpleName ?: "error")
    }
}
