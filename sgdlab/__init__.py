"""sgdlab: Monte Carlo studies of SGD as one compiled JAX program."""
