"""The Triton kernels compile to an sm_90 (H100) cubin without a GPU.

The interpreter tests check what the kernels compute but not that Triton's compiler accepts them (it is
stricter: constexpr-only globals, layouts for the time-axis scan, dtype casts). Triton ships ptxas, so the
whole pipeline down to the cubin runs here. A subprocess, because kernels built under TRITON_INTERPRET=1
(tests/test_triton_scan.py) cannot be compiled.
"""

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

COMPILE = textwrap.dedent(
    """
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from minrnn_cli.scans.triton_scan import kernels, ops

    def compile_kernel(kernel, dtype, cell, log_space, normalize, acc=tl.float32):
        constants = dict(CELL=cell, LOG_SPACE=log_space, NORMALIZE=normalize, HAS_H0=True, ACC=acc,
                         CHUNK_T=ops.CONFIG.chunk_t, BLOCK_D=ops.CONFIG.block_d)
        signature = {name: "constexpr" if name in constants else "*" + dtype if name.endswith("_ptr") else "i32"
                     for name in kernel.arg_names}
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
        options = {"num_warps": ops.CONFIG.num_warps}
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        assert compiled.asm["cubin"], "no cubin"

    for kernel in (kernels.scan_forward_kernel, kernels.scan_backward_kernel):
        compile_kernel(kernel, "fp32", kernels.MINLSTM, True, True)
        compile_kernel(kernel, "bf16", kernels.MINGRU, True, False)
    compile_kernel(kernels.scan_backward_kernel, "fp64", kernels.PLAIN, False, False, acc=tl.float64)
    print("compiled")
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernels_compile_for_h100(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # compile for real, and leave no cache behind
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # the current default, set to silence triton 3.9's notice
    result = subprocess.run([sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
