"""Issue 11's cold-start benchmark: the first call of a fresh process, dspex beside DSPy.

    python bench/cold_start.py [--runs 5] [--no-dspy]

Each run is a fresh interpreter that imports the library, configures an LM on
the fake OpenAI server (``bench/_fake_server.py``, its own process) and makes
one ``Predict("question -> answer")`` call with a new question (a cache miss,
so a real HTTP request). The child times itself from before the import to the
answer, so the interpreter's own start and exit do not count, and prints the
import's share and its CPU time (all threads) too; dspex's children also
print the split (import / ``LM(...)`` / ``configure`` / ``Predict(...)`` /
the call).

Two **floor** lines, measured in the same run, say what this machine charges
any asyncio client: a fresh interpreter that imports ``asyncio`` and makes
the same POST with ``http.client`` (blocking), and one that makes it over an
asyncio stream (``asyncio.run`` + ``open_connection``). Read dspex's figure
as a ratio to them: on a slow box ``import asyncio`` alone is ~30 ms. Bytecode is cached in a
scratch directory warmed by one run, as an installed package has it (the
shared venv sets ``PYTHONDONTWRITEBYTECODE``). Caches (dspex's and DSPy's)
live in the scratch directory. DSPy runs from ``/tmp/dspy-venv`` if it
exists. Prints the best and the median of ``--runs`` processes, interleaved
so load from other processes on this shared machine falls on both alike.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from runtime import Server

HERE = Path(__file__).resolve().parent
DSPY_PYTHON = Path("/tmp/dspy-venv/bin/python")

CHILD = """
import sys, time, uuid
start, cpu = time.perf_counter(), time.process_time()
import {module} as dspy
imported = time.perf_counter()
lm = dspy.LM("openai/bench", api_base=sys.argv[1], api_key="sk-bench-key")
made = time.perf_counter()
dspy.configure(lm=lm)
configured = time.perf_counter()
predict = dspy.Predict("question -> answer")
built = time.perf_counter()
answer = predict(question=f"cold {{uuid.uuid4()}}?").answer
end = time.perf_counter()
print(end - start, imported - start, time.process_time() - cpu,
      made - imported, configured - made, built - configured, end - built)
"""

# The floors: the same POST (an OpenAI chat request) with no library, after import asyncio.
_POST = """
body = json.dumps({{"model": "bench", "messages": [{{"role": "user",
    "content": f"cold {{uuid.uuid4()}}?"}}]}}).encode()
url = urllib.parse.urlsplit(sys.argv[1])
head = (f"POST {{url.path}}/chat/completions HTTP/1.1\\r\\nHost: {{url.netloc}}\\r\\n"
        "Content-Type: application/json\\r\\nAuthorization: Bearer sk-bench-key\\r\\n"
        f"Content-Length: {{len(body)}}\\r\\n\\r\\n").encode()
"""
FLOOR_HTTP_CLIENT = (
    """
import sys, time
start, cpu = time.perf_counter(), time.process_time()
import asyncio
imported = time.perf_counter()
import http.client, json, urllib.parse, uuid
"""
    + _POST
    + """
conn = http.client.HTTPConnection(url.hostname, url.port)
conn.request("POST", url.path + "/chat/completions", body,
             {{"Content-Type": "application/json", "Authorization": "Bearer sk-bench-key"}})
answer = json.loads(conn.getresponse().read())["choices"][0]["message"]["content"]
end = time.perf_counter()
print(end - start, imported - start, time.process_time() - cpu)
"""
)
FLOOR_STREAM = (
    """
import sys, time
start, cpu = time.perf_counter(), time.process_time()
import asyncio
imported = time.perf_counter()
import json, urllib.parse, uuid
"""
    + _POST
    + """
async def post():
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(head + body)
    headers = await reader.readuntil(b"\\r\\n\\r\\n")
    length = int(headers.lower().split(b"content-length:")[1].split(b"\\r\\n")[0])
    reply = await reader.readexactly(length)
    writer.close()
    return json.loads(reply)["choices"][0]["message"]["content"]
answer = asyncio.run(post())
end = time.perf_counter()
print(end - start, imported - start, time.process_time() - cpu)
"""
)


def run_child(python: str, module: str, url: str, env: dict[str, str]) -> tuple[float, ...]:
    """One fresh process; ``module`` is a library, or a floor's code (``FLOOR_*``)."""
    code = module.format() if "\n" in module else CHILD.format(module=module)
    out = subprocess.run(
        [python, "-c", code, url],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # keep bench/ (and the repository) off DSPy's path
    )
    return tuple(float(x) for x in out.stdout.strip().splitlines()[-1].split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes per library")
    parser.add_argument("--no-dspy", action="store_true", help="measure dspex only")
    args = parser.parse_args()

    variants: dict[str, tuple[str, str]] = {"dspex": (sys.executable, "dspex")}
    if not args.no_dspy and DSPY_PYTHON.exists():
        variants["DSPy"] = (str(DSPY_PYTHON), "dspy")
    variants["floor: asyncio + http.client"] = (sys.executable, FLOOR_HTTP_CLIENT)
    variants["floor: asyncio stream"] = (sys.executable, FLOOR_STREAM)
    server = Server()
    samples: dict[str, list[tuple[float, ...]]] = {name: [] for name in variants}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
            env["DSPEX_CACHE__DIR"] = str(Path(scratch) / "dspex-cache")
            env["DSPY_CACHEDIR"] = str(Path(scratch) / "dspy-cache")
            env["PYTHONPATH"] = str(HERE.parent)
            for python, module in variants.values():  # warm the bytecode
                run_child(python, module, server.url, env)
            for _ in range(args.runs):
                for name, (python, module) in variants.items():
                    samples[name].append(run_child(python, module, server.url, env))
    finally:
        server.stop()

    print(f"first call of a fresh process ({args.runs} processes each; ms)")
    print(f"  {'':30s}{'best':>8s}{'median':>8s}   {'import':>8s}{'after':>8s}{'CPU':>8s}")
    medians: dict[str, float] = {}
    for name, rows in samples.items():
        totals = [r[0] * 1000 for r in rows]
        medians[name] = statistics.median(totals)
        imports = statistics.median(r[1] * 1000 for r in rows)
        after = statistics.median((r[0] - r[1]) * 1000 for r in rows)
        cpu = statistics.median(r[2] * 1000 for r in rows)
        print(
            f"  {name:30s}{min(totals):8.1f}{medians[name]:8.1f}   "
            f"{imports:8.1f}{after:8.1f}{cpu:8.1f}"
        )
    print("  (import, after: medians of the import and of the rest; CPU: all threads;")
    print("   a floor's import is `import asyncio`)")
    split = [statistics.median(r[i] * 1000 for r in samples["dspex"]) for i in (1, 3, 4, 5, 6)]
    names = ("import", "LM()", "configure", "Predict()", "call")
    shown = ", ".join(f"{n} {v:.1f}" for n, v in zip(names, split, strict=True))
    print("  dspex split (medians): " + shown)
    for name, median in medians.items():
        if name.startswith("floor"):
            print(f"  dspex / {name}: {medians['dspex'] / median:.2f}x")
    if "DSPy" not in samples:
        print(f"  DSPy: skipped ({DSPY_PYTHON} not found or --no-dspy)")


if __name__ == "__main__":
    main()
