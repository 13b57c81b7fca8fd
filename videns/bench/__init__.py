"""The product's measuring tool: what ``python -m jobs.bench`` runs (and the bench part of ``jobs.gpu_check``).

Training, evaluation and prediction never import it; it only times them. Each
section measures one thing against a reference pipeline on the same generated
data (``data``): ``baseline`` is that reference (per-item reads of whole padded
rows, sequences packed in every batch, a host sync every step, ``torch.save``);
``loader``, ``training``, ``checkpoint``, ``ensemble``, ``ecg`` and ``cuda`` are
the sections, ``profiles`` their sizes, ``measure`` the timing helpers, ``run``
ties them into one result and ``report`` formats it.
"""
