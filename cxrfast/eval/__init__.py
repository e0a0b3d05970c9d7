"""Evaluation of pre-trained image–report models: zero-shot classification, retrieval, linear and localized
probes, pictures. Model-agnostic: it sees a preset only through PresetModel (encode_image, encode_text,
similarity; reconstruct where the preset has it); what a preset cannot give is skipped with the reason.

    from cxrfast.eval import evaluate, format_table, load_run, run_eval
    metrics = run_eval("RUN", data="DATA_ROOT")              # what `cxrfast eval --checkpoint RUN` calls
    run = load_run("RUN")                                    # model, tokenizer, config of a run folder
    metrics = evaluate(run.model, run.tokenizer, studies, out="RUN/eval")
    print(format_table(metrics))

Modules: features (frozen features of studies and texts), metrics (AUC, bootstrap, recall, Dice),
zeroshot, retrieval, probe, localized, pictures, report (evaluate, the table, metrics.json), run (run
folders). Names resolve on first use: importing cxrfast.eval imports none of them.
"""

_LAZY = {
    "evaluate": ("cxrfast.eval.report", "evaluate"),
    "format_table": ("cxrfast.eval.report", "format_table"),
    "write_metrics": ("cxrfast.eval.report", "write_metrics"),
    "ALL": ("cxrfast.eval.report", "ALL"),
    "load_run": ("cxrfast.eval.run", "load_run"),
    "run_eval": ("cxrfast.eval.run", "run_eval"),
    "Run": ("cxrfast.eval.run", "Run"),
    "roc_auc": ("cxrfast.eval.metrics", "roc_auc"),
    "bootstrap_aucs": ("cxrfast.eval.metrics", "bootstrap_aucs"),
    "recall_at_k": ("cxrfast.eval.metrics", "recall_at_k"),
    "encode_studies": ("cxrfast.eval.features", "encode_studies"),
    "class_prompts": ("cxrfast.eval.zeroshot", "class_prompts"),
    "posneg_prompts": ("cxrfast.eval.zeroshot", "posneg_prompts"),
}
_SUBMODULES = {"features", "metrics", "zeroshot", "retrieval", "probe", "localized", "pictures", "report", "run"}

from cxrfast._lazy import lazy_exports  # noqa: E402

__getattr__, __dir__, __all__ = lazy_exports(__name__, _LAZY, _SUBMODULES)
