"""A catalogue run recorded on a real MLflow tracking server, checked through its API and in its UI.

Three models (linear, mlp, and mlp_broken, which fails at restore) migrate under Prefect's test
harness into the `mlflow_server` fixture's server; MlflowClient then checks the runs, and a
headless chromium (Debian's, driven by Playwright; `make browser` installs it) opens the UI the
way a reviewer would: home page → experiment `ferry-examples` → expand the catalogue run → `mlp`,
its metrics and tags, its artifacts (plots previewed when the run has any), and the failed model's
run page. A full-page screenshot of the `mlp` run page is kept in pytest's tmp folder;
`FERRY_UPDATE_SCREENSHOT=1` also copies it to docs/mlflow-run.png (shown in the README).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from conftest import artifact_paths, keep_models
from mlflow.tracking import MlflowClient

from flows.migrate import CatalogueFailed, migrate_catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("prefect_harness")]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = REPO / "docs" / "mlflow-run.png"
TIMEOUT_MS = 30_000
PASSING = {"linear": "y", "mlp": "probs"}  # model -> its output
PARITY = ("max_abs_err", "mean_abs_err", "max_rel_err", "norm_rel_err")
RUN_NAME_CELL = '[role="gridcell"][col-id*="Run Name"]'  # the runs table's "Run Name" column

# MLflow 3.17's UI opens in its "GenAI" mode (an experiment's page is then a traces overview), on
# localhost it opens its Assistant panel over a third of the page, and its telemetry runs in a
# SharedWorker whose script request never completes for the page (no "networkidle" ever). What a
# user would click (the sidebar's "Model training" switch, closing the panel, the telemetry switch
# in Settings) is kept in localStorage as `<key>_v1`; set before the app starts.
UI_PREFERENCES = """
for (const [key, value] of Object.entries({
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.panelOpen_v1": false,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": true,
    "mlflow.settings.telemetry.enabled_v1": false,
    "mlflow.telemetry.info.alert.dismissed_v1": true,
})) window.localStorage.setItem(key, JSON.stringify(value));
"""


def add_broken_mlp(catalogue: Path) -> None:
    """mlp_broken beside mlp: mlp with a first layer one unit wider, so its checkpoint kernel [784, 64]
    does not fit ([784, 65]) and the model fails at restore."""
    models = catalogue.parent / "models"
    mlp = (models / "mlp.yaml").read_text()
    broken = (mlp.replace("name: mlp\n", "name: mlp_broken\n")
              .replace("{class: Dense, units: 64,", "{class: Dense, units: 65,")
              .replace("exports/mlp\n", "exports/mlp_broken\n"))
    assert broken.count("mlp_broken") == 2 and "units: 65" in broken, "mlp.yaml changed: update this test"
    (models / "mlp_broken.yaml").write_text(broken)


def test_catalogue_run_on_a_tracking_server_and_in_its_ui(catalogue, mlflow_server, monkeypatch, tmp_path, request):
    if not CHROMIUM.exists():
        pytest.fail(f"needs Debian's chromium at {CHROMIUM}: `make browser` (part of `make test`) installs it")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    keep_models(catalogue, list(PASSING))  # linear and mlp as they are
    add_broken_mlp(catalogue)

    started = time.monotonic()
    state = migrate_catalogue(str(catalogue), return_state=True)
    migrated = time.monotonic()
    assert state.is_failed()
    with pytest.raises(CatalogueFailed) as info:
        state.result()
    assert str(info.value) == "1 of 3 models failed: mlp_broken at restore"

    # a. The record, through the server's REST API.
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("ferry-examples")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # uploaded through the server
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("ferry.catalogue") == str(catalogue.resolve())]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    # The server is the session's: other tests find their own runs in `ferry-examples` by name.
    request.addfinalizer(lambda: [client.delete_run(r.info.run_id) for r in [parent, *children.values()]])
    assert sorted(children) == ["linear", "mlp", "mlp_broken"]
    assert parent.info.run_name.startswith("catalogue ") and parent.info.status == "FAILED"
    assert parent.data.tags["status"] == "failed"
    assert (parent.data.metrics["models.passed"], parent.data.metrics["models.total"]) == (2, 3)
    assert {"summary.json", "summary.txt"} <= artifact_paths(client, parent.info.run_id)

    artifacts = {name: artifact_paths(client, run.info.run_id) for name, run in children.items()}
    for name, output in PASSING.items():
        run = children[name]
        assert (run.info.status, run.data.tags["status"], run.data.tags["failed_stage"]) == ("FINISHED", "passed", "")
        assert run.data.metrics["coverage.model_weights"] == run.data.metrics["coverage.checkpoint_keys"] == 1.0
        assert all(run.data.metrics[f"parity.{output}.{k}"] <= 1e-5 for k in PARITY)
        assert {f"spec/{name}.yaml", "inventory.json", "name_map.json", "parity.json",
                "savedmodel/saved_model.pb"} <= artifacts[name]
        assert {"plots/coverage.png", f"plots/parity-{output}-abs-err.png", f"plots/parity-{output}-scatter.png"} \
            <= artifacts[name]
        name_, number = run.data.tags["registry.version"].split("/")  # registered, through the server
        version = client.get_model_version(name_, number)
        assert name_ == name and version.tags["mlflow.run_id"] == run.info.run_id
        assert version.aliases == ["migrated"] and version.tags["verdict"] == "passed"
    assert "mlp_broken" not in {m.name for m in client.search_registered_models()}  # failures never are
    history = client.get_metric_history(children["mlp"].info.run_id, "parity.probs.max_abs_err")
    assert sorted(m.step for m in history) == [0, 1, 2, 3]  # one value per shard
    broken = children["mlp_broken"]
    assert (broken.info.status, broken.data.tags["status"], broken.data.tags["failed_stage"]) == \
        ("FAILED", "failed", "restore")
    assert "shape mismatch" in broken.data.tags["error"]
    assert not [k for k in broken.data.metrics if k.startswith("parity.")]
    assert "name_map.json" in artifacts["mlp_broken"] and "parity.json" not in artifacts["mlp_broken"]

    # b. The same record in the UI, in a real browser.
    checked = time.monotonic()
    shot = check_ui(mlflow_server, experiment.experiment_id, parent, children, artifacts, tmp_path)
    print(f"migration {migrated - started:.1f}s, API checks {checked - migrated:.1f}s, "
          f"UI checks {time.monotonic() - checked:.1f}s; screenshot of the mlp run page: {shot}")
    if os.environ.get("FERRY_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)
        print(f"copied to {SCREENSHOT}")


def check_ui(url: str, experiment_id: str, parent, children: dict, artifacts: dict[str, set[str]],
             out: Path) -> Path:
    """Walk the UI to the mlp run and the failed run; the path of the mlp run page's screenshot."""
    from playwright.sync_api import expect, sync_playwright

    mlp, broken = children["mlp"], children["mlp_broken"]
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        # Debian's chromium, not a Playwright download; root needs --no-sandbox.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.add_init_script(UI_PREFERENCES)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)

            # Home page -> the experiment's runs table -> expand the catalogue run -> the mlp run.
            page.goto(f"{url}/")
            page.get_by_role("link", name="ferry-examples", exact=True).first.click()
            expect(page).to_have_url(re.compile(rf"#/experiments/{experiment_id}(\?.*)?$"))
            parent_link = run_link(page, parent.info.run_id)  # by id: names repeat within a minute
            expect(parent_link).to_have_text(parent.info.run_name)
            parent_cell = page.locator(RUN_NAME_CELL).filter(has=page.locator(f'a[href$="/runs/{parent.info.run_id}"]'))
            parent_cell.locator("button").click()  # the expander of its nested runs
            mlp_link = run_link(page, mlp.info.run_id)
            expect(mlp_link).to_have_text("mlp")
            mlp_link.click()
            expect(page).to_have_url(re.compile(rf"#/experiments/{experiment_id}/runs/{mlp.info.run_id}$"))

            # Overview: the parity metrics with their values, the status tags, the parent run.
            for key in PARITY:
                metric = page.get_by_role("link", name=f"parity.probs.{key}", exact=True)
                expect(metric).to_be_visible()
                cells = page.locator('[role="row"]').filter(has=metric).locator('[role="cell"]')
                assert math.isclose(float(cells.nth(1).inner_text()), mlp.data.metrics[f"parity.probs.{key}"],
                                    rel_tol=1e-3, abs_tol=1e-12)
            expect(tag(page, "status")).to_contain_text(re.compile(r":\s*passed"))
            expect(page.locator(f'a[href$="/runs/{parent.info.run_id}"]')).to_have_text(parent.info.run_name)
            shot = screenshot(page, out / "mlflow-run.png")

            # Artifacts: the files of the run's top folder; plots previewed, when the run has some.
            page.get_by_role("tab", name="Artifacts").click()
            expect(page).to_have_url(re.compile(rf"/runs/{mlp.info.run_id}/artifacts"))
            for name in sorted(p for p in artifacts["mlp"] if "/" not in p):
                expect(artifact_node(page, name)).to_be_visible()
            plots = sorted(p for p in artifacts["mlp"] if p.startswith("plots/"))
            if plots:
                artifact_node(page, "plots").click()
                for path in plots:
                    expect(artifact_node(page, path.rsplit("/", 1)[1])).to_be_visible()
                image = next((p for p in plots if p.endswith(".png")), None)
                if image:
                    artifact_node(page, image.rsplit("/", 1)[1]).click()
                    expect(page.get_by_text(image, exact=True)).to_be_visible()  # the preview's title
                    preview = page.get_by_alt_text(image, exact=True)  # fetched through the server, shown as a blob
                    expect(preview).to_be_visible()
                    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())

            # The failed model's run page: failed at restore.
            page.goto(f"{url}/#/experiments/{experiment_id}/runs/{broken.info.run_id}")
            expect(page.get_by_role("heading", name="mlp_broken")).to_be_visible()
            expect(tag(page, "failed_stage")).to_contain_text(re.compile(r":\s*restore"))
            expect(tag(page, "status")).to_contain_text(re.compile(r":\s*failed"))
            return shot
        finally:
            browser.close()


def run_link(page, run_id: str):
    """A run's link in the runs table's "Run Name" column (the "Models" column links models by name)."""
    return page.locator(RUN_NAME_CELL).locator(f'a[href$="/runs/{run_id}"]')


def tag(page, key: str):
    """A run tag on the run page (a chip `key: value`)."""
    return page.locator(f'[data-component-type="tag"][role="status"][title="{key}"]')


def artifact_node(page, name: str):
    """A file or folder in the artifact tree (by its base name)."""
    return page.locator(f'[data-testid="artifact-tree-node"][artifact-name="{name}"]')


def screenshot(page, path: Path) -> Path:
    """A screenshot of the whole page. The UI scrolls inside its main pane, not the window: the
    window is first made as tall as that pane's content, and the picture cut below the content."""
    page.wait_for_load_state("networkidle")  # the run page's sections load separately
    size = page.viewport_size
    extra = page.evaluate(MARK_MAIN_PANE)
    height = min(size["height"] + extra, 4000)
    page.set_viewport_size({"width": size["width"], "height": height})
    page.wait_for_function("h => window.innerHeight === h", arg=height)
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    bottom = page.evaluate(CONTENT_BOTTOM)
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, "width": size["width"],
                                          "height": min(height, math.ceil(bottom) + 24)})
    page.set_viewport_size(size)
    return path


# Marks the element the run page scrolls in (the tallest scrollable one with the most content below
# its fold) as `data-ferry-pane`; the height of that content.
MARK_MAIN_PANE = """() => {
    const pane = [...document.querySelectorAll('*')]
        .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY) && e.clientHeight > 0.6 * innerHeight)
        .sort((a, b) => (b.scrollHeight - b.clientHeight) - (a.scrollHeight - a.clientHeight))[0];
    if (!pane) return 0;
    pane.setAttribute('data-ferry-pane', '');
    return pane.scrollHeight - pane.clientHeight;
}"""

# The lowest bottom edge of something visible inside the marked pane: text, an image or an input
# field, or a box that clips text (a scrolling table); empty spacers do not count.
CONTENT_BOTTOM = """() => {
    const lowest = (e) => [...e.children].reduce((low, child) => {
        const r = child.getBoundingClientRect(), style = getComputedStyle(child);
        if (!r.width || !r.height || style.visibility === 'hidden') return low;
        const clips = style.overflowX !== 'visible' || style.overflowY !== 'visible';
        const text = [...child.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
        const seen = clips ? (child.innerText ?? child.textContent).trim() !== ''
                           : text || /^(img|svg|canvas|input|textarea)$/i.test(child.tagName);
        return Math.max(low, seen ? r.bottom : 0, clips ? 0 : lowest(child));
    }, 0);
    return lowest(document.querySelector('[data-ferry-pane]') || document.body);
}"""
