"""The compiled kernels (hygie_w2l/_kernels.c: the composition's warp maps and
triangulation, the Poisson blend's fill) where the package was built with a C compiler;
None elsewhere, their callers then doing the same work with numpy, scipy and OpenCV
(`hygie-w2l doctor` says which)."""

from __future__ import annotations

from types import ModuleType

ABI = 2  # what this package's callers expect of the module (_kernels.c: KERNELS_ABI)

kernels: ModuleType | None
try:
    from hygie_w2l import _kernels as kernels
except ImportError:  # pragma: no cover - depends on the machine that installed the package
    kernels = None
if kernels is not None and getattr(kernels, "ABI", None) != ABI:
    kernels = None  # built from other sources (a stale build): `make install` rebuilds it
