"""Types of the compiled kernels (hygie_w2l/_kernels.c)."""

import numpy as np

ABI: int

def affine_maps(dst: np.ndarray, src: np.ndarray, fallback: np.ndarray, h: int, w: int,
                s: int, map_x: np.ndarray, map_y: np.ndarray) -> None: ...
def delaunay(points: np.ndarray, out: np.ndarray) -> int: ...
def membrane(values: np.ndarray, known: np.ndarray, h: int, w: int, c: int, coarsest_px: int,
             smoothing: int, out: np.ndarray) -> None: ...
