"""One ensemble member, assembled from its config and trained: the layer above ``videns.config``.

``train.py`` builds the parts and resumes or starts; ``loop.py`` runs epochs and
steps and decides when to validate, save and stop; ``data.py`` turns the data
config into checked splits and loaders; ``checkpoint.py`` says what a checkpoint
and a best model hold. The parts themselves (loss, optimizer and schedule,
step, state, signals) live in ``videns.training``.
"""
