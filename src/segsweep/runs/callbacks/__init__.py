"""Lightning callbacks, one a file: the metrics file, image counts, RNG state, prediction images, HPARAMS, epoch lines."""
