"""Work spread beyond one process: deterministic shards of a run (``shards.py``), the merge of their partial runs
(``merge.py``) and Ray as the cluster engine (``ray_backend.py``, imported only when ``--ray`` is given)."""
