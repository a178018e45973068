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
extra_compile_args = ["-O3", "-std=c11", "-pthread", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra"]
extra_link_args = ["-pthread"]
if os.environ.get("GRADCLIP_SANITIZE"):
    flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    extra_compile_args += flags
    extra_link_args += flags

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
