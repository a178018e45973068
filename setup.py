"""Build the one C extension, gradclip._C.

Everything declarative lives in pyproject.toml; this file only describes the extension.
"""

import glob
import os

import numpy as np
from setuptools import Extension, setup

CSRC = "csrc"

# Portable flags: the wheel must run on any x86-64, so no -march=native. Wider SIMD is chosen
# at run time inside the kernels. -ffp-contract=off keeps a*b+c two roundings on every ISA path,
# so results never depend on which CPU ran them. Never -ffast-math: it breaks NaN/inf handling.
# Hidden symbols and link-time optimisation let the compiler inline across files and call
# without the PLT, which decides a list of 1000 small arrays (1000 arrays of 64 float32,
# interleaved A/B: get_total_norm ~10 % faster from the first, clip_grad_value_ and
# clip_grads_with_norm_ ~5 % from each). The link repeats the code-generation flags, as LTO
# generates code then.
codegen = ["-O3", "-ffp-contract=off", "-fno-math-errno"]
extra_compile_args = codegen + ["-std=c11", "-pthread", "-fvisibility=hidden", "-Wall", "-Wextra"]
extra_link_args = ["-pthread"]
if os.environ.get("GRADCLIP_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_compile_args += flags
    extra_link_args += flags
else:
    extra_compile_args += ["-flto=auto"]
    extra_link_args += codegen + ["-flto=auto"]

setup(
    ext_modules=[
        Extension(
            "gradclip._C",
            sources=sorted(glob.glob(os.path.join(CSRC, "*.c"))),
            depends=sorted(glob.glob(os.path.join(CSRC, "*.h"))),
            include_dirs=[CSRC, np.get_include()],
            define_macros=[
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                ("NPY_TARGET_VERSION", "NPY_1_25_API_VERSION"),
            ],
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ],
    package_dir={"": "python"},
)
