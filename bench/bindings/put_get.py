"""The Python side of bench/bindings.sh: N put+get pairs of a 1 KiB document through the
Python bindings. Prints `figure bindings_python_put_get_us MICROSECONDS us`."""

import os
import sys
import tempfile
import time

import fieldvault as fv

n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
with tempfile.TemporaryDirectory() as d:
    v = fv.Vault.init_with_passphrase(os.path.join(d, "v"), "default", "marble quokka seventy umbrella bench", 600)
    body = '{"text":"' + "x" * 1012 + '"}'
    # A first round, as in every language's side (the JVM's JIT warms up on it).
    for i in range(n):
        v.put("warm", f"d{i}", body)
        v.get("warm", f"d{i}")
    start = time.perf_counter()
    for i in range(n):
        v.put("bench", f"d{i}", body)
        assert v.get("bench", f"d{i}") is not None
    per = (time.perf_counter() - start) * 1e6 / n
    print(f"figure bindings_python_put_get_us {per:.1f} us")
    v.close()
