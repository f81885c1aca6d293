# Plots of the study from the journal, and the pages `snakemake --report report.html` shows.
from snaketune.report import plot_files, report_pages

REPORT_PAGES = report_pages(TUNING, OUT)


report: "../report/workflow.rst"


rule report:
    input:
        results_outputs(),
    output:
        plots=[
            report(
                out(plot["path"]),
                caption=f"../report/{plot['kind']}.rst",
                category="Plots",
                subcategory=plot["metric"] or "all objectives",
                labels={"plot": plot["title"], "objective": plot["metric"] or ", ".join(TUNING["metrics"])},
            )
            for plot in plot_files(TUNING)
        ],
        interactive=report(
            str(REPORT_PAGES["interactive"]),
            caption="../report/interactive.rst",
            category="Plots (interactive)",
            labels={"page": "all plots, interactive"},
        ),
        trials=report(
            str(REPORT_PAGES["trials"]),
            caption="../report/trials.rst",
            category="Results",
            labels={"page": "trials"},
        ),
        best=report(
            str(REPORT_PAGES["best"]),
            caption="../report/best_trial.rst",
            category="Results",
            labels={"page": "best trial" if len(TUNING["metrics"]) == 1 else "Pareto-optimal trials"},
        ),
    log:
        out("logs/report.log"),
    threads: 1
    resources:
        gpu=0,
    conda:
        "../../envs/snaketune.yaml"
    script:
        "../../scripts/report.py"
