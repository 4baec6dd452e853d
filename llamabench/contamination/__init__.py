"""Contamination of evaluation tasks by a training corpus, by the LLaMA 2 criterion: ``criterion.py`` (the rule),
``samples.py`` (the evaluation side), ``corpus.py`` (the corpus and its units of work), ``scan.py`` (the stream
through every core), ``result.py`` (tables, manifest, run folder) and ``subsets.py`` (scores by subset)."""
