"""The local model's process entry: ``llama_cpp.server`` without llama.cpp's extra CPU buffers.

Runs in the server child, never in dspex's own process. llama.cpp's "extra
buffer types" (weight repacking, Intel AMX tiles) are off unless ``--repack``
is the first argument: on AMX CPUs the AMX kernels give wrong results for
Q4_0/Q4_1 weights (SmolLM2 ships Q4_1; ggml-org/llama.cpp#16315) or segfault
(llama-cpp-python 0.3.35+; ggml-org/llama.cpp#20824). Without them llama.cpp
uses its ordinary CPU kernels.
"""

from __future__ import annotations

import runpy
import sys

REPACK_FLAG = "--repack"


def _without_extra_buffers() -> None:
    import llama_cpp.llama_cpp as lib  # the ctypes binding Llama() reads its defaults from

    fields = {name for name, *_ in lib.llama_model_params._fields_}
    if "use_extra_bufts" not in fields:  # llama-cpp-python < 0.3.15: nothing to turn off
        return
    defaults = lib.llama_model_default_params

    def model_defaults() -> object:
        params = defaults()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = model_defaults


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == REPACK_FLAG:
        del sys.argv[1]
    else:
        _without_extra_buffers()
    sys.argv[0] = "llama_cpp.server"
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
