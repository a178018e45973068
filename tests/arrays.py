"""Test arrays in every memory layout gradclip must handle in place."""

import numpy as np

LAYOUTS = ["C", "F", "strided", "reversed", "transposed", "0d", "empty"]
# NumPy 2 allows 64 dimensions, NumPy 1.x 32: the many-dims cases use as many as there are.
MAX_DIMS = 64 if np.lib.NumpyVersion(np.__version__) >= "2.0.0" else 32
DTYPES = [np.float16, np.float32, np.float64]


def random_values(rng, shape, dtype, scale=1.0):
    dtype = np.dtype(dtype)
    values = scale * rng.standard_normal(shape)
    if dtype.kind == "c":
        values = values + 1j * scale * rng.standard_normal(shape)
    return np.asarray(values).astype(dtype)


def make_array(rng, layout, dtype, scale=1.0, shape=(6, 5)):
    """A writeable array with the given layout, filled with N(0, scale^2) values."""
    if layout == "C":
        return random_values(rng, shape, dtype, scale)
    if layout == "F":
        return np.asfortranarray(random_values(rng, shape, dtype, scale))
    if layout == "strided":
        big = random_values(rng, (2 * shape[0] + 1, 3 * shape[1]), dtype, scale)
        return big[1::2, ::3]
    if layout == "reversed":
        return random_values(rng, shape, dtype, scale)[::-1, ::-1]
    if layout == "transposed":
        return random_values(rng, shape[::-1], dtype, scale).T
    if layout == "0d":
        return random_values(rng, (), dtype, scale)
    if layout == "empty":
        return random_values(rng, (0, shape[1]), dtype, scale)
    raise ValueError(layout)


def mixed_list(rng, dtype, scale=1.0, layouts=LAYOUTS):
    """One array per layout, in one list."""
    return [make_array(rng, layout, dtype, scale) for layout in layouts]
