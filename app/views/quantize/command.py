"""The quantize command the format page's choices make, and the engine's checks of its output before it runs."""

from __future__ import annotations

from app import services
from app.jobs import engine_argv
from app.views.quantize.options import FIELD_LABELS


def blocker(page) -> str | None:
    """Why the chosen types cannot run with these settings, or None."""
    types = page.selected_types()
    if not types:
        return "Choose a quantization type (Ctrl-click to queue several)."
    if page.uses_mix():  # measured on calibration text, whatever the table holds
        return None if page.imatrix_mode.currentData() != "imatrix" else (
            "The best mix is measured on calibration text: choose calibration text as the source.")
    if page.is_awq():
        if page.options.fitted_samples() == 0:
            return "The calibration text is too short for one AWQ sample: shorten the sample length."
        return None
    bad = [t for t in types if t in page.unavailable]
    if bad:
        return f"{', '.join(bad)} cannot be made here: {page.unavailable[bad[0]]}"
    mode = page.imatrix_mode.currentData()
    text = page.options.text
    if mode == "calibration" and text is not None and text.tokens < services.WINDOW_TOKENS:
        return (f"The calibration text has {text.tokens:,} tokens, not one window of {services.WINDOW_TOKENS}: "
                f"choose a longer {FIELD_LABELS['calibration text'].lower()}.")
    if mode == "none":
        needs = [x.name for x in page.types if x.name in types and x.needs_imatrix]
        if needs:
            return (f"{', '.join(needs)} needs an importance matrix: choose a source under "
                    f"{FIELD_LABELS['importance matrix']}.")
    return None


def build_command(page) -> list[str] | None:
    """The engine command for ``page``'s choices, or None (with a message in place) when it cannot run."""
    page.banner.clear()
    if page.model is None:
        page.banner.show_message("Choose a model first.")
        return None
    if (reason := page.blocker()) is not None:
        page.banner.show_message(reason)
        return None
    types = page.selected_types()
    out = page.output.text().strip()
    if not out:
        page.banner.show_message(f"{FIELD_LABELS['output path']}: choose where to save the result.")
        return None
    o = page.options
    args = [page.model.path, "--type", ",".join(types), "--out", out, "--threads", str(page.threads.value())]
    text = o.cal_path.text().strip()
    if page.uses_mix():  # measured on calibration text: the given one, else Nibble's own
        args[1:3] = page.mix.args()
        return engine_argv("quantize", *args, *(["--calibration", text] if text else []))
    if page.is_awq():  # AWQ always calibrates: on the given text, else on Nibble's own
        samples = o.fitted_samples()
        if samples is None:
            page.banner.show_message("Still counting the calibration text's tokens; try again in a moment.")
            return None
        if text:
            args += ["--calibration", text]
        args += ["--samples", str(samples), "--seqlen", str(o.seqlen.value()),
                 "--group-size", str(o.group_size.currentData())]
        return engine_argv("quantize", *args)
    mode = page.imatrix_mode.currentData()
    if mode == "imatrix":
        path = page.imatrix_path.text().strip()
        if not path:
            page.banner.show_message(f"{FIELD_LABELS['importance matrix']}: choose the imatrix file, or "
                                     "another source.")
            return None
        args += ["--imatrix", path]
    elif mode == "calibration":
        args += ["--calibration", text or "default"]
        if o.imatrix_windows():
            args += ["--imatrix-chunks", str(o.imatrix_windows())]
    return engine_argv("quantize", *args)

def check_outputs(page) -> list[str] | None:
    """The engine's checks of the output, shown here before anything starts: None (with the message) when
    it cannot be written, else the existing files it would replace."""
    o = page.options
    folder = o.folder()
    if folder == services.outputs_dir() and not folder.exists():
        try:  # Nibble's own outputs folder is made on first use
            folder.mkdir(parents=True)
        except OSError as exc:
            page.banner.show_message(f"{FIELD_LABELS['output path']}: cannot create {folder} ({exc.strerror}).")
            return None
    mode = page.imatrix_mode.currentData()
    try:
        return services.check_outputs(
            page.model.path, ["Q8_0"] if page.uses_mix() else page.selected_types(), page.output.text().strip(),
            calibration=(o.cal_path.text().strip() or "default") if mode == "calibration" and not page.is_awq() else None,
            imatrix=page.imatrix_path.text().strip() or None if mode == "imatrix" and not page.is_awq() else None)
    except services.NibbleError as exc:
        field = FIELD_LABELS.get(exc.setting or "")
        page.banner.show_message(f"{field}: {exc}" if field else str(exc))
        return None
