"""Build of memipc's one C extension, ``memipc._core``.

Everything else about the package lives in pyproject.toml; setuptools still
needs this file to describe a C extension portably across the versions that
Python 3.10+ ships with.  Set ``MEMIPC_SANITIZE=1`` to build the core with
AddressSanitizer and UndefinedBehaviorSanitizer (used by .ci/run).
"""

import os

from setuptools import Extension, setup

compile_args = ["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]
link_args: list[str] = []
if os.environ.get("MEMIPC_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
    compile_args = [arg for arg in compile_args if arg != "-O2"] + ["-O1", *sanitize]
    link_args += sanitize

setup(
    ext_modules=[
        Extension(
            "memipc._core",
            sources=[
                "src/c/module.c", "src/c/futex.c", "src/c/ofd.c", "src/c/proc.c", "src/c/mutex.c",
                "src/c/semaphore.c", "src/c/event.c", "src/c/rwlock.c", "src/c/ring.c", "src/c/wait.c", "src/c/bus.c",
            ],
            depends=[
                "src/c/atomic.h", "src/c/futex.h", "src/c/layout.h", "src/c/ofd.h", "src/c/result.h",
                "src/c/spin.h", "src/c/sync.h", "src/c/ring.h",
            ],
            include_dirs=["src/c"],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    ]
)
