"""Evaluation of clinical quality and safety (EVALUATION.md): versioned datasets run through
the real services in-process, metrics, run records, the release gate and the reviewer loop.

    datasets.py / build.py / authored.py   the datasets, how they are built and versioned
    mesh.py                                the in-process mesh (also used by the tests)
    runner.py / scoring.py                 run cases through consult; metrics (pure)
    evaluate.py                            one run -> RunRecord (record.py)
    gate.py + gate.toml                    thresholds and tolerances against a baseline
    report.py                              terminal table, markdown report with plots
    store.py / reviews.py / taxonomy.py    Postgres, reviewer loop, error taxonomy

Nothing is imported here: `utimesh.kit.metrics` imports `taxonomy` without pulling the mesh."""
