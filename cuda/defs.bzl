"""shardload_cuda_libraries: the cuda/ libraries, built once per CUDA runtime.

The same sources are compiled twice: against the real CUDA runtime (libcudart_static
and the nvcc-built cast kernels; the targets without a suffix, used by every binary)
and against //cuda/fake:cudart (suffix "_fake", used only by tests that run the GPU
code paths on machines without a GPU). Each library depends on its runtime directly,
so the runtime's archive always comes after its users on the link line.
"""

# (name, source, header, libraries of this package it uses, other dependencies)
_LIBRARIES = [
    ("status", "status.cc", "status.h", [], ["//cuda:sticky_errors", "//format:status"]),
    ("runtime", "runtime.cc", "runtime.h", ["status"], ["//format:scoped_fd", "//format:status"]),
    ("cast", "cast.cc", "cast.h", ["runtime", "status"], ["//format:dtype", "//format:status"]),
    ("sink", "cuda_sink.cc", "cuda_sink.h", ["cast", "runtime", "status"], [
        "//format:dtype",
        "//format:status",
        "//format:text",
        "//loader:cast",
        "//loader:sink",
    ]),
    ("backend", "cuda_backend.cc", "cuda_backend.h", ["runtime", "sink", "status"], [
        "//format:status",
        "//loader:sink",
    ]),
]

def shardload_cuda_libraries(suffix, runtime, kernels):
    """Defines status, runtime, cast, sink and backend with `suffix`.

    Args:
      suffix: appended to every target name ("" or "_fake").
      runtime: the label providing the cuda* functions.
      kernels: the label providing LaunchCastKernel (cuda/cast_kernels.h); used by cast.
    """
    for name, src, hdr, local, other in _LIBRARIES:
        deps = [":" + d + suffix for d in local] + other
        if name == "cast" and kernels != runtime:
            deps.append(kernels)
        native.cc_library(
            name = name + suffix,
            srcs = [src],
            hdrs = [hdr],
            linkstatic = True,
            linkopts = ["-lpthread"] if name == "sink" else [],
            deps = deps + [runtime],
        )
