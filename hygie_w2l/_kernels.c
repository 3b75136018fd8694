/* The composition's compiled kernels (compose.py, blend.py), each releasing the GIL:

   - affine_maps: the piecewise-affine warp's cv2.remap maps, every pixel exact;
   - delaunay: the warp's triangles (Bowyer-Watson), or -1 where qhull must make them;
   - membrane: blend.membrane's push-pull fill, the Poisson blend's smooth field.

   affine_maps(dst, src, fallback, h, w, s, map_x, map_y) fills map_x and map_y,
   (h / s, w / s) float32, with the source position of each destination pixel of a region
   of h x w full-resolution pixels seen at subsampling s (pixels.py's layers): its centre
   is s * j + (s - 1) / 2 at full resolution; inside triangle t (dst[t], full-resolution
   pixels local to the region) the position is the affine taking dst[t]'s corners to
   src[t]'s applied to that centre, elsewhere the fallback (dst -> src, 2 x 3); each then
   seen at subsampling s again.

   dst, src: (T, 3, 2) float64, fallback: (2, 3) float64, all C-contiguous. A pixel
   centre on an edge shared by two triangles may take either's position: the warp is
   continuous there, so both are the same. Flat triangles cover no pixel.

   The package builds this module when it can (pyproject.toml: optional); without it the
   same work is done by numpy, scipy and OpenCV (compose._coarse_maps, which computes the
   maps every 2nd or 4th pixel and interpolates them in between; scipy's qhull; the
   membrane's OpenCV pyramid), the lips path's composition taking 1.5x as long. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

static void fill(float *map_x, float *map_y, Py_ssize_t width, Py_ssize_t row,
                 Py_ssize_t j0, Py_ssize_t j1, const double *m, int s)
{
    /* at column j the centre is x = s * j + half: the position, seen at subsampling s,
       is (m0 x + m1 y + m2 - half) / s = m0 j + (m0 half + m1 y + m2 - half) / s;
       float from here (a 1e-4 px rounding: cv2.remap takes 1/32 px steps), so that the
       loop is vectorised */
    const double half = (s - 1) / 2.0;
    const double y = s * (double)row + half;
    const float cx = (float)((m[0] * half + m[1] * y + m[2] - half) / s);
    const float cy = (float)((m[3] * half + m[4] * y + m[5] - half) / s);
    const float ax = (float)m[0], ay = (float)m[3];
    float *px = map_x + row * width, *py = map_y + row * width;
    for (int j = (int)j0; j < (int)j1; j++) {
        px[j] = cx + ax * (float)j;
        py[j] = cy + ay * (float)j;
    }
}

static inline Py_ssize_t iceil(double x)
{
    const Py_ssize_t i = (Py_ssize_t)x;  /* toward zero */
    return i + (i < x);
}

static inline Py_ssize_t ifloor(double x)
{
    const Py_ssize_t i = (Py_ssize_t)x;
    return i - (i > x);
}

/* A triangle's columns on each row, as bounds linear in the row: the pixel centre
   (u, v) is inside (edges included) when u >= a[e] + b[e] * v for each edge e whose bound
   is a lower one, u <= a[e] + b[e] * v for an upper one, and a[e] + b[e] * v >= 0 for a
   horizontal edge (which bounds the rows). */
typedef struct {
    double a[3], b[3];  /* bound = a + b * v */
    int kind[3];        /* +1 lower bound, -1 upper bound, 0 none */
    Py_ssize_t i0, i1;  /* its rows, clipped */
    double m[6];        /* its matrix, dst -> src */
} Spans;

static int spans_of(const double *u, const double *v, Py_ssize_t rows, Spans *sp)
{
    const double area = (u[1] - u[0]) * (v[2] - v[0]) - (u[2] - u[0]) * (v[1] - v[0]);
    if (!isfinite(area) || (area < 1e-9 && area > -1e-9))
        return 0;  /* flat (or not a number): covers no pixel */
    const double sign = area > 0 ? 1.0 : -1.0;
    for (int e = 0; e < 3; e++) {
        const int a = e, b = (e + 1) % 3;
        /* inside: sign * cross(b - a, p - a) >= -tol, i.e. k * u + c0 + c1 * v >= -tol */
        const double du = u[b] - u[a], dv = v[b] - v[a];
        const double k = -sign * dv;
        const double c1 = sign * du, c0 = sign * (dv * u[a] - du * v[a]);
        const double tol = 1e-7 * ((du > 0 ? du : -du) + (dv > 0 ? dv : -dv));
        if (k != 0) {
            sp->kind[e] = k > 0 ? 1 : -1;
            sp->a[e] = (-c0 - tol) / k;
            sp->b[e] = -c1 / k;
        } else {  /* a horizontal edge: it bounds the rows (below) */
            sp->kind[e] = 0;
            sp->a[e] = c0 + tol;  /* inside when c0 + c1 * v + tol >= 0 */
            sp->b[e] = c1;
        }
    }
    double top = v[0], bottom = v[0];
    for (int k = 1; k < 3; k++) {
        top = v[k] < top ? v[k] : top;
        bottom = v[k] > bottom ? v[k] : bottom;
    }
    if (bottom < 0 || top > (double)rows)  /* (also keeps the conversions in range) */
        return 0;
    sp->i0 = top < 0 ? 0 : iceil(top - 1e-7);  /* >= 0 */
    sp->i1 = bottom > rows - 1 ? rows - 1 : ifloor(bottom + 1e-7);  /* <= rows - 1 */
    return sp->i0 <= sp->i1;
}

/* Its columns [j0, j1) on row v (none when j0 >= j1). */
static inline void span(const Spans *sp, double v, Py_ssize_t cols, Py_ssize_t *j0,
                        Py_ssize_t *j1)
{
    double lo = 0.0, hi = (double)(cols - 1);
    for (int e = 0; e < 3; e++) {
        const double bound = sp->a[e] + sp->b[e] * v;
        if (sp->kind[e] > 0)
            lo = bound > lo ? bound : lo;
        else if (sp->kind[e] < 0)
            hi = bound < hi ? bound : hi;
        else if (bound < 0)
            hi = -1.0;
    }
    if (!(lo <= hi)) {  /* none (and lo may be far past the row: no conversion) */
        *j0 = *j1 = 0;
        return;
    }
    *j0 = iceil(lo);
    *j1 = ifloor(hi) + 1;
}

/* The affine (2 x 3, row-major) taking triangle d's corners to s's; 0 where d is flat. */
static int triangle_affine(const double *d, const double *s, double *m)
{
    const double d1x = d[2] - d[0], d1y = d[3] - d[1], d2x = d[4] - d[0], d2y = d[5] - d[1];
    const double det = d1x * d2y - d2x * d1y;
    if (det < 1e-6 && det > -1e-6)
        return 0;
    const double i00 = d2y / det, i01 = -d2x / det, i10 = -d1y / det, i11 = d1x / det;
    for (int k = 0; k < 2; k++) {
        const double s1 = s[2 + k] - s[k], s2 = s[4 + k] - s[k];
        m[3 * k] = s1 * i00 + s2 * i10;
        m[3 * k + 1] = s1 * i01 + s2 * i11;
        m[3 * k + 2] = s[k] - m[3 * k] * d[0] - m[3 * k + 1] * d[1];
    }
    return 1;
}

static PyObject *affine_maps(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer dst, src, fb, bx, by;
    Py_ssize_t h, w;
    int s;
    PyObject *result = NULL;
    Spans *spans = NULL;
    if (!PyArg_ParseTuple(args, "y*y*y*nniw*w*", &dst, &src, &fb, &h, &w, &s, &bx, &by))
        return NULL;
    const Py_ssize_t n = dst.len / (Py_ssize_t)(6 * sizeof(double));
    const Py_ssize_t rows = s > 0 ? h / s : 0, cols = s > 0 ? w / s : 0;
    if (s < 1 || h < 0 || w < 0 || h % s || w % s
        || dst.len != n * 6 * (Py_ssize_t)sizeof(double)
        || src.len != dst.len || fb.len != 6 * (Py_ssize_t)sizeof(double)
        || bx.len != rows * cols * (Py_ssize_t)sizeof(float) || by.len != bx.len) {
        PyErr_SetString(PyExc_ValueError, "affine_maps: sizes do not match");
        goto done;
    }
    spans = PyMem_RawMalloc((size_t)(n > 0 ? n : 1) * sizeof(Spans));
    if (spans == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    const double *d = dst.buf, *sc = src.buf, *m = fb.buf;
    float *map_x = bx.buf, *map_y = by.buf;
    Py_BEGIN_ALLOW_THREADS
    const double half = (s - 1) / 2.0;
    Py_ssize_t used = 0;
    for (Py_ssize_t t = 0; t < n; t++) {
        double u[3], v[3];
        for (int k = 0; k < 3; k++) {  /* in subsampled pixels: centre j at u = j */
            u[k] = (d[6 * t + 2 * k] - half) / s;
            v[k] = (d[6 * t + 2 * k + 1] - half) / s;
        }
        if (triangle_affine(d + 6 * t, sc + 6 * t, spans[used].m)
            && spans_of(u, v, rows, &spans[used]))
            used++;
    }
    for (Py_ssize_t i = 0; i < rows; i++)
        fill(map_x, map_y, cols, i, 0, cols, m, s);
    for (Py_ssize_t t = 0; t < used; t++) {
        for (Py_ssize_t i = spans[t].i0; i <= spans[t].i1; i++) {
            Py_ssize_t j0, j1;
            span(&spans[t], (double)i, cols, &j0, &j1);
            if (j0 < j1)
                fill(map_x, map_y, cols, i, j0, j1, spans[t].m, s);
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyMem_RawFree(spans);
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    PyBuffer_Release(&fb);
    PyBuffer_Release(&bx);
    PyBuffer_Release(&by);
    return result;
}

/* ------------------------------------------------------------ Delaunay ---- */

static inline double orient(const double *a, const double *b, const double *c)
{
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
}

/* > 0 when d is strictly inside the circle through a, b, c (counter-clockwise) */
static inline double in_circle(const double *a, const double *b, const double *c,
                               const double *d)
{
    const double ax = a[0] - d[0], ay = a[1] - d[1], bx = b[0] - d[0], by = b[1] - d[1];
    const double cx = c[0] - d[0], cy = c[1] - d[1];
    return (ax * ax + ay * ay) * (bx * cy - cx * by) - (bx * bx + by * by) * (ax * cy - cx * ay)
           + (cx * cx + cy * cy) * (ax * by - bx * ay);
}

/* Whether point q is inside triangle v's circumcircle (v counter-clockwise). A triangle
   with one corner of the super triangle (index >= n) is taken as having that corner at
   infinity (its circle: the open half-plane beyond its finite edge, and the edge's open
   segment), so that a point on the hull's edge, collinear with two hull points, falls in
   it exactly instead of by the rounding of a huge circle; two or three super corners:
   their finite (far) positions. */
static int conflicts(const double *all, Py_ssize_t n, const int *v, const double *q)
{
    const int far = (v[0] >= n) + (v[1] >= n) + (v[2] >= n);
    if (far != 1)
        return in_circle(all + 2 * v[0], all + 2 * v[1], all + 2 * v[2], q) > 0;
    int k = 0;
    while (v[k] < n)
        k++;
    const double *a = all + 2 * v[(k + 1) % 3], *b = all + 2 * v[(k + 2) % 3];
    const double side = orient(a, b, q);
    if (side != 0)
        return side > 0;
    const double t = (q[0] - a[0]) * (b[0] - a[0]) + (q[1] - a[1]) * (b[1] - a[1]);
    const double len = (b[0] - a[0]) * (b[0] - a[0]) + (b[1] - a[1]) * (b[1] - a[1]);
    return t > 0 && t < len;
}

static double hull_area(const double *pts, Py_ssize_t n, int *order, int *hull)
{
    /* Andrew's monotone chain on the points sorted by (x, y): twice the hull's area */
    for (Py_ssize_t i = 0; i < n; i++)
        order[i] = (int)i;
    for (Py_ssize_t i = 1; i < n; i++) {  /* insertion sort: n is small */
        const int k = order[i];
        Py_ssize_t j = i - 1;
        while (j >= 0 && (pts[2 * order[j]] > pts[2 * k]
                          || (pts[2 * order[j]] == pts[2 * k]
                              && pts[2 * order[j] + 1] > pts[2 * k + 1]))) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = k;
    }
    Py_ssize_t m = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        while (m >= 2 && orient(pts + 2 * hull[m - 2], pts + 2 * hull[m - 1],
                                pts + 2 * order[i]) <= 0)
            m--;
        hull[m++] = order[i];
    }
    for (Py_ssize_t i = n - 2, lower = m + 1; i >= 0; i--) {
        while (m >= lower && orient(pts + 2 * hull[m - 2], pts + 2 * hull[m - 1],
                                    pts + 2 * order[i]) <= 0)
            m--;
        hull[m++] = order[i];
    }
    double area = 0.0;  /* shoelace, relative to the first corner (rounding) */
    const double x0 = pts[2 * hull[0]], y0 = pts[2 * hull[0] + 1];
    for (Py_ssize_t i = 0; i + 1 < m; i++)
        area += (pts[2 * hull[i]] - x0) * (pts[2 * hull[i + 1] + 1] - y0)
                - (pts[2 * hull[i + 1]] - x0) * (pts[2 * hull[i] + 1] - y0);
    return area;
}

/* Bowyer-Watson: the Delaunay triangles of the n points (counter-clockwise) into tri,
   their count returned; -1 where the result is not a triangulation of the points' hull
   using every point (duplicates, near-degenerate rounding): the caller uses qhull. */
static Py_ssize_t bowyer_watson(const double *pts, Py_ssize_t n, int *tri, Py_ssize_t cap)
{
    if (n < 3)
        return -1;
    for (Py_ssize_t i = 0; i < 2 * n; i++)
        if (!isfinite(pts[i]))
            return -1;
    double lo[2] = {pts[0], pts[1]}, hi[2] = {pts[0], pts[1]};
    for (Py_ssize_t i = 1; i < n; i++)
        for (int k = 0; k < 2; k++) {
            lo[k] = pts[2 * i + k] < lo[k] ? pts[2 * i + k] : lo[k];
            hi[k] = pts[2 * i + k] > hi[k] ? pts[2 * i + k] : hi[k];
        }
    const double span = (hi[0] - lo[0] > hi[1] - lo[1] ? hi[0] - lo[0] : hi[1] - lo[1]) + 1.0;
    const double mx = (lo[0] + hi[0]) / 2, my = (lo[1] + hi[1]) / 2;
    const Py_ssize_t slots = 4 * n + 8;
    double *all = PyMem_RawMalloc((size_t)(2 * (n + 3)) * sizeof(double));
    int *work = PyMem_RawMalloc((size_t)(3 * slots + 2 * (3 * slots) + 3 * n + 3) * sizeof(int));
    if (all == NULL || work == NULL) {
        PyMem_RawFree(all);
        PyMem_RawFree(work);
        return -2;
    }
    int *t = work, *edges = work + 3 * slots, *order = edges + 2 * (3 * slots),
        *hull = order + n;
    memcpy(all, pts, (size_t)(2 * n) * sizeof(double));
    const double far = 1e6 * span;  /* the super triangle, far around the points */
    all[2 * n] = mx - far, all[2 * n + 1] = my - far;
    all[2 * n + 2] = mx + far, all[2 * n + 3] = my - far;
    all[2 * n + 4] = mx, all[2 * n + 5] = my + far;
    Py_ssize_t count = 1;
    t[0] = (int)n, t[1] = (int)n + 1, t[2] = (int)n + 2;
    Py_ssize_t result = -1;
    for (Py_ssize_t p = 0; p < n; p++) {
        const double *q = all + 2 * p;
        Py_ssize_t n_edges = 0, kept = 0;
        for (Py_ssize_t k = 0; k < count; k++) {
            int *v = t + 3 * k;
            if (conflicts(all, n, v, q)) {
                for (int e = 0; e < 3; e++) {  /* its edges: shared ones cancel */
                    const int a = v[e], b = v[(e + 1) % 3];
                    Py_ssize_t j = 0;
                    while (j < n_edges && !(edges[2 * j] == b && edges[2 * j + 1] == a))
                        j++;
                    if (j < n_edges) {
                        n_edges--;
                        edges[2 * j] = edges[2 * n_edges];
                        edges[2 * j + 1] = edges[2 * n_edges + 1];
                    } else {
                        edges[2 * n_edges] = a;
                        edges[2 * n_edges + 1] = b;
                        n_edges++;
                    }
                }
            } else {
                memmove(t + 3 * kept, v, 3 * sizeof(int));
                kept++;
            }
        }
        if (n_edges == 0 || kept + n_edges > slots)
            goto done;  /* on a circle through a triangle only (a duplicate point) */
        for (Py_ssize_t j = 0; j < n_edges; j++) {
            int *v = t + 3 * (kept + j);
            v[0] = edges[2 * j], v[1] = edges[2 * j + 1], v[2] = (int)p;
        }
        count = kept + n_edges;
    }
    Py_ssize_t out = 0;
    double area = 0.0;
    for (Py_ssize_t k = 0; k < count; k++) {
        const int *v = t + 3 * k;
        if (v[0] >= n || v[1] >= n || v[2] >= n)
            continue;
        const double a = orient(all + 2 * v[0], all + 2 * v[1], all + 2 * v[2]);
        if (a <= 0 || out >= cap)
            goto done;
        area += a;
        memcpy(tri + 3 * out, v, 3 * sizeof(int));
        out++;
    }
    /* a triangulation of the hull: no overlap and no gap (the areas add up to the
       hull's), and every point a corner of some triangle */
    const double whole = hull_area(pts, n, order, hull);
    if (whole <= 0 || fabs(area - whole) > 1e-9 * whole)
        goto done;
    memset(order, 0, (size_t)n * sizeof(int));
    for (Py_ssize_t k = 0; k < 3 * out; k++)
        order[tri[k]] = 1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!order[i])
            goto done;
    result = out;
done:
    PyMem_RawFree(all);
    PyMem_RawFree(work);
    return result;
}

static PyObject *delaunay(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer points, out;
    if (!PyArg_ParseTuple(args, "y*w*", &points, &out))
        return NULL;
    const Py_ssize_t n = points.len / (Py_ssize_t)(2 * sizeof(double));
    const Py_ssize_t cap = out.len / (Py_ssize_t)(3 * sizeof(int));
    Py_ssize_t count = -1;
    if (points.len != n * 2 * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "delaunay: points must be (n, 2) float64");
    } else {
        Py_BEGIN_ALLOW_THREADS
        count = bowyer_watson(points.buf, n, out.buf, cap);
        Py_END_ALLOW_THREADS
        if (count == -2)
            PyErr_NoMemory();
    }
    PyBuffer_Release(&points);
    PyBuffer_Release(&out);
    return PyErr_Occurred() ? NULL : PyLong_FromSsize_t(count);
}

/* ------------------------------------------------------------ membrane ---- */

static inline int reflect101(int p, int n)
{
    if (n == 1)
        return 0;
    while (p < 0 || p >= n)
        p = p < 0 ? -p : 2 * n - 2 - p;
    return p;
}

/* cv2.pyrDown of a float (h, w, c) image: the 5 x 5 binomial filter at every 2nd pixel,
   mirrored borders (BORDER_REFLECT_101); ((h + 1) / 2, (w + 1) / 2, c) out. Separable:
   each source row filtered across (into tmp, h x dw x c), then the rows down. */
static void pyr_down(const float *src, int h, int w, int c, float *dst, float *tmp, int *at)
{
    const int dh = (h + 1) / 2, dw = (w + 1) / 2, n = dw * c;
    for (int j = 0; j < dw; j++)
        for (int b = 0; b < 5; b++)
            at[5 * j + b] = reflect101(2 * j + b - 2, w) * c;
    for (int r = 0; r < h; r++) {
        const float *row = src + (size_t)r * w * c;
        float *t = tmp + (size_t)r * n;
        for (int j = 0; j < dw; j++) {
            const int *a = at + 5 * j;
            for (int ch = 0; ch < c; ch++)
                t[j * c + ch] = row[a[0] + ch] + row[a[4] + ch]
                                + 4.f * (row[a[1] + ch] + row[a[3] + ch]) + 6.f * row[a[2] + ch];
        }
    }
    for (int i = 0; i < dh; i++) {
        const float *r0 = tmp + (size_t)reflect101(2 * i - 2, h) * n;
        const float *r1 = tmp + (size_t)reflect101(2 * i - 1, h) * n;
        const float *r2 = tmp + (size_t)reflect101(2 * i, h) * n;
        const float *r3 = tmp + (size_t)reflect101(2 * i + 1, h) * n;
        const float *r4 = tmp + (size_t)reflect101(2 * i + 2, h) * n;
        float *d = dst + (size_t)i * n;
        for (int k = 0; k < n; k++)
            d[k] = (r0[k] + r4[k] + 4.f * (r1[k] + r3[k]) + 6.f * r2[k]) * (1.f / 256.f);
    }
}

/* cv2.pyrUp of a float (h, w, c) image to (dh, dw, c) (dh is 2h or 2h - 1; dw likewise):
   output p takes (1, 6, 1) / 8 of the source around p / 2 where p is even, (4, 4) / 8 of
   p / 2 and the next where odd; mirrored on the left and top, the last sample repeated on
   the right and bottom (as OpenCV does). Rows down first (into tmp, w x c), then across. */
static void pyr_up(const float *src, int h, int w, int c, float *dst, int dh, int dw,
                   float *tmp)
{
    const int n = w * c;
    for (int y = 0; y < dh; y++) {
        const int i = y / 2, next = i + 1 < h ? i + 1 : h - 1;
        const float *a = src + (size_t)i * n, *b = src + (size_t)next * n;
        if (y % 2) {
            for (int k = 0; k < n; k++)
                tmp[k] = 4.f * (a[k] + b[k]);
        } else {
            const float *p = src + (size_t)(i > 0 ? i - 1 : (h > 1 ? 1 : 0)) * n;
            for (int k = 0; k < n; k++)
                tmp[k] = p[k] + b[k] + 6.f * a[k];
        }
        float *d = dst + (size_t)y * dw * c;
        for (int x = 0; x < dw; x++) {
            const int j = x / 2, nj = (j + 1 < w ? j + 1 : w - 1) * c;
            if (x % 2) {
                for (int ch = 0; ch < c; ch++)
                    d[x * c + ch] = 4.f * (tmp[j * c + ch] + tmp[nj + ch]) * (1.f / 64.f);
            } else {
                const int pj = (j > 0 ? j - 1 : (w > 1 ? 1 : 0)) * c;
                for (int ch = 0; ch < c; ch++)
                    d[x * c + ch] = (tmp[pj + ch] + tmp[nj + ch] + 6.f * tmp[j * c + ch])
                                    * (1.f / 64.f);
            }
        }
    }
}

/* out = weighted + keep * field, keep = 1 - weight: a push step */
static void push(const float *weighted, const float *weight, const float *field, int h,
                 int w, int c, float *out)
{
    for (size_t i = 0; i < (size_t)h * w; i++) {
        const float keep = 1.f - weight[i];
        for (int ch = 0; ch < c; ch++)
            out[i * c + ch] = weighted[i * c + ch] + keep * field[i * c + ch];
    }
}

/* out = weighted + keep * cv2.blur(field, (3, 3)) (mirrored borders); tmp: h x w x c */
static void push_blurred(const float *weighted, const float *weight, const float *field,
                         int h, int w, int c, float *out, float *tmp)
{
    const int n = w * c;
    for (int y = 0; y < h; y++) {  /* across: each sample and its two neighbours */
        const float *row = field + (size_t)y * n;
        float *t = tmp + (size_t)y * n;
        for (int x = 0; x < w; x++) {
            const int l = reflect101(x - 1, w) * c, r = reflect101(x + 1, w) * c;
            for (int ch = 0; ch < c; ch++)
                t[x * c + ch] = row[l + ch] + row[x * c + ch] + row[r + ch];
        }
    }
    for (int y = 0; y < h; y++) {  /* down, and the push */
        const float *u = tmp + (size_t)reflect101(y - 1, h) * n, *m = tmp + (size_t)y * n;
        const float *d = tmp + (size_t)reflect101(y + 1, h) * n;
        const float *wv = weighted + (size_t)y * n, *wt = weight + (size_t)y * w;
        float *o = out + (size_t)y * n;
        for (int x = 0; x < w; x++) {
            const float keep = 1.f - wt[x];
            for (int ch = 0; ch < c; ch++) {
                const int k = x * c + ch;
                o[k] = wv[k] + keep * ((u[k] + m[k] + d[k]) * (1.f / 9.f));
            }
        }
    }
}

#define MAX_LEVELS 32

/* blend.membrane: push-pull on a Gaussian pyramid (blend.py says how and why). */
static int membrane_fill(const float *values, const float *known, int h, int w, int c,
                         int coarsest, int smoothing, float *out)
{
    float *vals[MAX_LEVELS], *wts[MAX_LEVELS];
    int hs[MAX_LEVELS], ws[MAX_LEVELS];
    int n = 1, ok = 0;
    vals[0] = (float *)values, wts[0] = (float *)known, hs[0] = h, ws[0] = w;
    /* a and b: the field at one level and the next; tmp: a pass's rows; at: indices */
    const size_t size = (size_t)h * w * c;
    float *a = PyMem_RawMalloc(size * sizeof(float)), *b = PyMem_RawMalloc(size * sizeof(float));
    float *tmp = PyMem_RawMalloc(size * sizeof(float));
    int *at = PyMem_RawMalloc((size_t)(5 * (w + 1)) * sizeof(int));
    if (a == NULL || b == NULL || tmp == NULL || at == NULL)
        goto done;
    while ((hs[n - 1] < ws[n - 1] ? hs[n - 1] : ws[n - 1]) > coarsest && n < MAX_LEVELS) {
        const int ph = hs[n - 1], pw = ws[n - 1], lh = (ph + 1) / 2, lw = (pw + 1) / 2;
        vals[n] = PyMem_RawMalloc((size_t)lh * lw * c * sizeof(float));
        wts[n] = PyMem_RawMalloc((size_t)lh * lw * sizeof(float));
        hs[n] = lh, ws[n] = lw;
        n++;
        if (vals[n - 1] == NULL || wts[n - 1] == NULL)
            goto done;
        pyr_down(vals[n - 2], ph, pw, c, vals[n - 1], tmp, at);
        pyr_down(wts[n - 2], ph, pw, 1, wts[n - 1], tmp, at);
        for (size_t i = 0; i < (size_t)lh * lw; i++) {
            const float weight = 4.f * wts[n - 1][i];
            const float over = weight > 1.f ? weight : 1.f;
            for (int ch = 0; ch < c; ch++)
                vals[n - 1][i * c + ch] = 4.f * vals[n - 1][i * c + ch] / over;
            wts[n - 1][i] = weight / over;
        }
    }
    {
        const int L = n - 1;
        const size_t m = (size_t)hs[L] * ws[L];
        double total = 0.0;
        for (size_t i = 0; i < m; i++)
            total += wts[L][i];
        for (int ch = 0; ch < c; ch++) {
            double sum = 0.0;
            for (size_t i = 0; i < m; i++)
                sum += vals[L][i * c + ch];
            const float mean = (float)(sum / (total > 1e-6 ? total : 1e-6));
            for (size_t i = 0; i < m; i++)
                a[i * c + ch] = mean;
        }
    }
    for (int level = n - 1; level >= 0; level--) {
        const int lh = hs[level], lw = ws[level];
        float *t;
        if (level < n - 1) {  /* a holds the coarser level's field */
            pyr_up(a, hs[level + 1], ws[level + 1], c, b, lh, lw, tmp);
            t = a, a = b, b = t;
        }
        push(vals[level], wts[level], a, lh, lw, c, b);
        t = a, a = b, b = t;
        for (int k = 0; level > 0 && k < smoothing; k++) {
            push_blurred(vals[level], wts[level], a, lh, lw, c, b, tmp);
            t = a, a = b, b = t;
        }
    }
    memcpy(out, a, size * sizeof(float));
    ok = 1;
done:
    for (int i = 1; i < n; i++) {
        PyMem_RawFree(vals[i]);
        PyMem_RawFree(wts[i]);
    }
    PyMem_RawFree(a);
    PyMem_RawFree(b);
    PyMem_RawFree(tmp);
    PyMem_RawFree(at);
    return ok;
}

static PyObject *membrane(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer values, known, out;
    int h, w, c, coarsest, smoothing;
    if (!PyArg_ParseTuple(args, "y*y*iiiiiw*", &values, &known, &h, &w, &c, &coarsest,
                          &smoothing, &out))
        return NULL;
    const Py_ssize_t n = (Py_ssize_t)h * w;
    if (h < 1 || w < 1 || c < 1 || coarsest < 1 || smoothing < 0
        || values.len != n * c * (Py_ssize_t)sizeof(float)
        || known.len != n * (Py_ssize_t)sizeof(float) || out.len != values.len) {
        PyErr_SetString(PyExc_ValueError, "membrane: sizes do not match");
    } else {
        int ok;
        Py_BEGIN_ALLOW_THREADS
        ok = membrane_fill(values.buf, known.buf, h, w, c, coarsest, smoothing, out.buf);
        Py_END_ALLOW_THREADS
        if (!ok)
            PyErr_NoMemory();
    }
    PyBuffer_Release(&values);
    PyBuffer_Release(&known);
    PyBuffer_Release(&out);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"affine_maps", affine_maps, METH_VARARGS,
     "affine_maps(dst, src, fallback, h, w, s, map_x, map_y): the piecewise-affine remap "
     "maps of the triangles dst (T, 3, 2) taken to src, fallback (2, 3) elsewhere."},
    {"delaunay", delaunay, METH_VARARGS,
     "delaunay(points, out): the Delaunay triangles of (n, 2) float64 points into out "
     "((2n, 3) int32), their count; -1 where they cannot be trusted (use qhull)."},
    {"membrane", membrane, METH_VARARGS,
     "membrane(values, known, h, w, c, coarsest_px, smoothing, out): blend.membrane's "
     "push-pull fill of (h, w, c) float32 values known where known (h, w) is 1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

/* Raised with every change of a function's arguments or meaning: native.py refuses a
   module built from other sources (a stale build left in place) instead of calling it. */
#define KERNELS_ABI 2

PyMODINIT_FUNC PyInit__kernels(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", KERNELS_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
