"""shardload_cuda_libraries: the cuda/ libraries, built once per CUDA runtime.

The same sources are compiled twice: against the real CUDA runtime (libcudart_static
and the nvcc-built cast kernels; the targets without a suffix, used by every binary)
and against //cuda/fake:cudart (suffix "_fake", used only by tests that run the GPU
code paths on machines without a GPU). Each library depends on its runtime directly,
so the runtime's archive always comes after its users on the link line.
"""

def shardload_cuda_libraries(suffix, runtime, kernels):
    """Defines status, runtime, cast, sink and backend with `suffix`.

    Args:
      suffix: appended to every target name ("" or "_fake").
      runtime: the label providing the cuda* functions.
      kernels: the label providing LaunchCastKernel (cuda/cast_kernels.h).
    """
    native.cc_library(
        name = "status" + suffix,
        srcs = ["status.cc"],
        hdrs = ["status.h"],
        linkstatic = True,
        deps = [
            "//format:status",
            runtime,
        ],
    )
    native.cc_library(
        name = "runtime" + suffix,
        srcs = ["runtime.cc"],
        hdrs = ["runtime.h"],
        linkstatic = True,
        deps = [
            ":status" + suffix,
            "//format:status",
            runtime,
        ],
    )
    native.cc_library(
        name = "cast" + suffix,
        srcs = ["cast.cc"],
        hdrs = ["cast.h"],
        linkstatic = True,
        deps = [
            ":runtime" + suffix,
            ":status" + suffix,
            "//format:dtype",
            "//format:status",
        ] + ([kernels] if kernels != runtime else []) + [runtime],
    )
    native.cc_library(
        name = "sink" + suffix,
        srcs = ["cuda_sink.cc"],
        hdrs = ["cuda_sink.h"],
        linkstatic = True,
        linkopts = ["-lpthread"],
        deps = [
            ":cast" + suffix,
            ":runtime" + suffix,
            ":status" + suffix,
            "//format:dtype",
            "//format:status",
            "//loader:cast",
            "//loader:sink",
            runtime,
        ],
    )
    native.cc_library(
        name = "backend" + suffix,
        srcs = ["cuda_backend.cc"],
        hdrs = ["cuda_backend.h"],
        linkstatic = True,
        deps = [
            ":runtime" + suffix,
            ":sink" + suffix,
            ":status" + suffix,
            "//format:status",
            "//loader:sink",
            runtime,
        ],
    )
