"""The report: every plot from a real study, `snakemake --report`, placeholders, the dashboard."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import threading
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from snaketune import report, summary
from snaketune.layout import StudyLayout
from snaketune.storage import JournalFile, open_storage
from workflow_helpers import (make_journal_with_every_state, run_cli, run_snakemake, tiny_config,
                              write_config, write_reverse_words)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
METRICS = ["eval_loss", "eval_mean_token_accuracy"]


@pytest.fixture(scope="module")
def multi_objective_study(tmp_path_factory):
    """A tiny two-objective study run by the real Snakefile (default target: report included)."""
    workdir = tmp_path_factory.mktemp("report_study")
    write_reverse_words(workdir / "data.jsonl")
    config = tiny_config(n_trials=2, evaluation_metrics=METRICS,
                         evaluation_direction=["minimize", "maximize"])
    write_config(workdir, config)
    run_snakemake(workdir)
    return workdir


@pytest.mark.workflow
def test_report_rule_writes_every_plot(multi_objective_study):
    out = multi_objective_study / "tuning_output"
    files = report.plot_files(METRICS)
    kinds = {entry["kind"] for entry in files}
    assert kinds == {"optimization_history", "param_importances", "parallel_coordinate", "slice",
                     "learning_curves", "pareto_front"}
    assert {entry["path"] for entry in files} >= {f"report/slice_{m}.png" for m in METRICS}
    for entry in files:
        data = (out / entry["path"]).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, entry["path"]
    page = (out / "report" / "plots.html").read_text()
    assert "<script src=" not in page and "plotly.js v" in page  # plotly.js embedded: no network
    assert page.count('class="plotly-graph-div"') >= len(files) - 1
    assert "Pareto front" in page and "Learning curves" in page
    trials = (out / "report" / "trials.html").read_text()
    assert trials.count("<tr") == 3 and "class='best'" in trials
    assert "Pareto-optimal trials" in (out / "report" / "best_trial.html").read_text()


@pytest.mark.workflow
def test_snakemake_report_builds_one_self_contained_page(multi_objective_study):
    run_snakemake(multi_objective_study, "--report", "report.html")
    page = (multi_objective_study / "report.html").read_text()
    assert len(page) > 100_000
    for name in ("optimization_history_eval_loss.png", "pareto_front.png", "learning_curves.png",
                 "plots.html", "trials.html", "best_trial.html"):
        assert name in page, name
    assert "Parameter importances" in page  # a caption, rendered


def chromium() -> str:
    """A Chromium from the distribution's packages (CI installs chromium-headless-shell)."""
    for name in ("chromium-headless-shell", "chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("no Chromium in CI: apt-get install chromium-headless-shell")
    pytest.skip("no Chromium here (apt-get install chromium-headless-shell)")


def distinct_colours(png: bytes) -> int:
    from PIL import Image

    return len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20) or [])


@pytest.mark.system
def test_the_report_and_its_pages_render_in_a_headless_browser(multi_objective_study):
    """`snaketune report` (as the README says), then every page in a real Chromium: no console
    errors, every plot drawn (an image of the plot, or plotly's SVG traces), not a blank area."""
    from playwright.sync_api import sync_playwright

    out = multi_objective_study / "tuning_output"
    run_cli(multi_objective_study, "report", "tuning_output")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium())
        errors = []

        def open_page(path):
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(f"{path.name}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{path.name}: {e}"))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            return page

        # The Snakemake report: every plot of the Plots category (one subcategory per objective,
        # and one for the plots of all of them), chosen in turn, shows its image.
        entries = report.plot_files(METRICS)
        shown = 0
        for subcategory in dict.fromkeys(e["metric"] or "all objectives" for e in entries):
            page = open_page(StudyLayout(out).snakemake_report)
            page.get_by_role("link", name="Plots", exact=True).click()
            page.get_by_role("link", name=subcategory, exact=True).click()
            rows = page.locator("tbody tr")
            expected = [e for e in entries if (e["metric"] or "all objectives") == subcategory]
            assert rows.count() == len(expected), page.inner_text("body")
            for i in range(rows.count()):
                rows.nth(i).locator("a").first.click()
                image = page.locator("img[src^='data:image/png']").last
                image.wait_for(state="visible")
                assert image.evaluate("img => img.naturalWidth") >= 400, rows.nth(i).inner_text()
                assert distinct_colours(image.screenshot()) > 20, rows.nth(i).inner_text()
                shown += 1
            page.close()
        assert shown == len(entries)

        # plots.html: plotly drew every figure (its SVG holds the traces), none left blank.
        page = open_page(out / "report" / "plots.html")
        figures = page.locator(".plotly-graph-div")
        assert figures.count() >= len(entries) - 1
        for i in range(figures.count()):
            figure = figures.nth(i)
            figure.locator(".main-svg").first.wait_for(state="visible")
            marks = figure.evaluate("d => d.querySelectorAll('.main-svg path, .main-svg circle, .main-svg rect').length")
            assert marks > 10, f"plot {i} of plots.html has {marks} marks"
            assert distinct_colours(figure.screenshot()) > 20, f"plot {i} of plots.html looks blank"

        # The tables: trials best first (the Pareto-optimal ones highlighted), and the best page.
        page = open_page(out / "report" / "trials.html")
        header = page.locator("thead th").all_inner_texts()
        assert header[:2] == ["trial", "dir"]
        first = page.locator("tbody tr").first
        assert first.get_attribute("class") == "best" and first.locator("td").nth(1).inner_text().startswith("trial_")
        page = open_page(out / "report" / "best_trial.html")
        assert page.locator("section h2").count() >= 1
        browser.close()
    assert not errors, errors


def test_small_study_gets_placeholders_that_say_why(tmp_path):
    study = optuna.create_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal")))
    study.add_trial(optuna.trial.create_trial(
        params={"learning_rate": 1e-3}, value=1.0,
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)}))
    reason = report.not_drawable("param_importances", study)
    assert reason == "Importances need at least 2 completed trials; this study has 1."
    report.draw_png("param_importances", study, ["eval_loss"], None, "Parameter importances",
                    tmp_path / "importances.png")
    assert (tmp_path / "importances.png").read_bytes().startswith(PNG_MAGIC)
    assert report.draw_plotly("param_importances", study, ["eval_loss"], None,
                              "Parameter importances") == reason
    assert report.not_drawable("optimization_history", study) is None


def test_learning_curves_from_intermediate_values_or_the_live_logs(tmp_path):
    out = tmp_path / "out"
    study = make_journal_with_every_state(out)
    # Trial 3 reported one intermediate value before it was pruned: not a curve, so the logs.
    label, curves = report.learning_curves(study)
    assert label == "training loss"
    assert curves == {4: [(1, 2.5), (2, 1.25), (4, 0.75)]}  # the half-written last line skipped
    trial = study.ask()
    for step, value in ((10, 2.0), (20, 1.5)):
        trial.report(value, step)
    study.tell(trial, 1.5)
    assert report.learning_curves(study) == ("objective (intermediate values)",
                                             {3: [(1, 3.0)], trial.number: [(10, 2.0), (20, 1.5)]})


def test_summary_table_reads_well(tmp_path):
    out = tmp_path / "out"
    study = make_journal_with_every_state(out)
    text = summary.summary_table(StudyLayout(out), "snaketune", ["eval_loss"])
    assert text.splitlines()[0] == ("snaketune: study 'snaketune', 5 trial(s): 2 completed, 1 pruned, "
                                    "1 failed, 1 running")
    assert "\nbest trial 1 (trial_1/)\n" in text and text.count("best trial") == 1
    assert re.search(r"objective eval_loss +0.9\n", text)
    assert re.search(rf"param learning_rate +{study.trials[1].params['learning_rate']:.4g}\n", text)
    assert "trial 2 (trial_2/) failed: RuntimeError: boom" in text
    # One numbering: each trial beside its folder, best first, then running, pruned, failed.
    table = text.split("trials, best first\n", 1)[1].splitlines()
    assert table[0].split()[:3] == ["trial", "dir", "state"]
    assert [row.split()[:3] for row in table[2:7]] == [
        ["1*", "trial_1/", "COMPLETE"], ["0", "trial_0/", "COMPLETE"], ["4", "trial_4/", "RUNNING"],
        ["3", "trial_3/", "PRUNED"], ["2", "trial_2/", "FAIL"]]
    assert "per completed trial" in text


def test_journal_opens_in_optuna_dashboard(tmp_path):
    """optuna-dashboard <output_dir>/study.journal: the dashboard guesses a journal file from the path."""
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    out = tmp_path / "out"
    make_journal_with_every_state(out)
    app = wsgi(str(StudyLayout(out).journal))
    environ = {"PATH_INFO": "/api/studies", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200")
    (study,) = json.loads(body)["study_summaries"]
    assert study["study_name"] == "snaketune"


def test_dashboard_writes_wait_for_the_trials_lock(tmp_path):
    """The dashboard opens a journal file with JournalFileBackend's default (symlink) lock; trials
    use JournalFileOpenLock. Both take `<journal>.lock`, so they exclude each other."""
    path = str(StudyLayout(tmp_path).journal)
    ours = open_storage(path)
    study_id = ours.create_new_study([], "s")
    dashboard = JournalStorage(JournalFileBackend(path))  # what optuna-dashboard builds on POSIX
    lock = JournalFile(path).lock  # the lock a trial job's appends take
    lock.acquire()
    done = threading.Event()

    def write():
        dashboard.set_study_user_attr(study_id, "note", "from the dashboard")
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.5)
    assert not done.is_set()  # waiting for the trials' lock
    lock.release()
    writer.join(10)
    assert done.is_set()
    assert open_storage(path).get_study_user_attrs(study_id) == {"note": "from the dashboard"}


def test_plot_files_for_one_objective():
    single = report.plot_files(["eval_loss"])
    assert [e["path"] for e in single] == [
        "report/optimization_history.png", "report/param_importances.png",
        "report/parallel_coordinate.png", "report/slice.png", "report/learning_curves.png"]


@pytest.mark.workflow
def test_a_report_made_before_the_study_grew_is_named_out_of_date_with_the_command_that_rewrites_it(
        multi_objective_study, tmp_path):
    """Issue 33: after a study grew (n_trials 2 -> 3, run again), the end summary pointed at the
    report.html written before the new trial existed as if it were current. On a copy of the
    shared study (a copied study grows from its own trials), so the other tests keep their 2."""
    workdir = tmp_path / "study"
    shutil.copytree(multi_objective_study, workdir, symlinks=True)
    run_cli(workdir, "report", "tuning_output")
    report_page = StudyLayout(workdir / "tuning_output").snakemake_report
    current = "report: tuning_output/report.html (plots: tuning_output/report/)"
    assert current in run_cli(workdir, "status", "tuning_output").stdout

    grown = run_cli(workdir, "tune", "-c", "tune.yaml", "--cores", "2", "tuning.n_trials=3")
    stale = ("report: tuning_output/report.html is out of date (written before trial 2 finished); "
             "`snaketune report tuning_output` rewrites it")
    assert stale in grown.stdout and current not in grown.stdout
    assert stale in run_cli(workdir, "status", "tuning_output").stdout
    written = report_page.stat().st_mtime

    run_cli(workdir, "report", "tuning_output")
    assert report_page.stat().st_mtime > written
    status = run_cli(workdir, "status", "tuning_output").stdout
    assert current in status and "out of date" not in status
