"""The compiled kernels (hygie_w2l/_kernels.c: the composition's warp maps and
triangulation, the Poisson blend's fill) where the package was built with a C compiler;
None elsewhere, their callers then doing the same work with numpy, scipy and OpenCV
(`hygie-w2l doctor` says which)."""

from __future__ import annotations

from types import ModuleType

kernels: ModuleType | None
try:
    from hygie_w2l import _kernels as kernels
except ImportError:  # pragma: no cover - depends on the machine that installed the package
    kernels = None
