"""``jobs.gpu_check``: every CUDA path of the product, checked in one command (see :mod:`videns.gpu_check.check`)."""
