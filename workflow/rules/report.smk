# Plots of the study from the journal, and the pages `snakemake --report report.html` shows.
from snaketune.report import plot_files


report: "../report/workflow.rst"


rule report:
    input:
        results_csv=str(LAYOUT.results_csv),
        best_record=str(LAYOUT.best_record(N_OBJECTIVES)),
        trials=trial_folders(),
    output:
        plots=[
            report(
                str(LAYOUT.output_dir / plot["path"]),
                caption=f"../report/{plot['kind']}.rst",
                category="Plots",
                subcategory=plot["metric"] or "all objectives",
                labels={"plot": plot["title"], "objective": plot["metric"] or ", ".join(TUNING.metrics)},
            )
            for plot in plot_files(TUNING.metrics)
        ],
        interactive=report(
            str(LAYOUT.report_page("interactive")),
            caption="../report/interactive.rst",
            category="Plots (interactive)",
            labels={"page": "all plots, interactive"},
        ),
        trials=report(
            str(LAYOUT.report_page("trials")),
            caption="../report/trials.rst",
            category="Results",
            labels={"page": "trials"},
        ),
        best=report(
            str(LAYOUT.report_page("best")),
            caption="../report/best_trial.rst",
            category="Results",
            labels={"page": "best trial" if len(TUNING.metrics) == 1 else "Pareto-optimal trials"},
        ),
    log:
        str(LAYOUT.rule_log("report")),
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/report.py"
