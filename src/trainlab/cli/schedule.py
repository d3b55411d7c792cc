"""trainlab schedule [RECIPE] [key=value ...] [--out lr.png]: draw the LR schedule without training."""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("recipe", nargs="?", help="built-in recipe name or YAML path (default: digits-cnn)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted overrides parsed as YAML, e.g. schedule.name=onecycle optim.lr=0.01")
    p.add_argument("--out", default="lr.png",
                   help="PNG file to write (default: lr.png); missing folders are created")


def run(args) -> int:
    from ..data import build_data
    from ..engine.trainer import check_watched_metrics, schedule_monitor_mode
    from ..optim.schedules import build_schedule, optimizer_steps_per_epoch, schedule_curve
    from ..recipe import check_names, load_recipe
    from ..report.optim_plots import plot_schedule
    from ..tasks import build_task
    from .fit import split_recipe_and_overrides
    from .outputs import check_output, make_parent

    recipe_arg, overrides = split_recipe_and_overrides(args.recipe, args.overrides)
    out = check_output(args.out, "--out")  # before any work; folders are made when writing
    recipe = load_recipe(recipe_arg, overrides)
    check_names(recipe)
    bundle = build_data(recipe, statistics=False)
    n_train = len(bundle.train)  # the split sizes fix steps per epoch; no model is built
    # the same check as fit's, so both accept the same recipes
    has_val = bundle.val is not None and len(bundle.val) > 0
    task = build_task(recipe, bundle.info)
    check_watched_metrics(recipe, task, has_val)
    spe = optimizer_steps_per_epoch(recipe, n_train)
    epochs = recipe.train.epochs
    sched_cfg, optim = recipe.schedule, recipe.optim
    sched = build_schedule(sched_cfg, optim.lr, spe, epochs, monitor_mode=schedule_monitor_mode(recipe, task))
    total = spe * epochs
    curve = schedule_curve(sched, optim.lr, total, monitor=sched_cfg.monitor)

    notes, marks = [], []
    if sched.reactive:
        notes.append(f"{sched_cfg.name}: assumes {sched_cfg.monitor} stays flat (never improves after epoch 1),")
        notes.append(f"so the LR decays as early as patience={sched_cfg.patience} allows")
    switch = optim.switch
    if switch is not None:
        if switch.at_epoch is not None and switch.at_epoch <= epochs:
            at = (switch.at_epoch - 1) * spe
            marks.append((at, f"{optim.name} -> {switch.to}"))
            if switch.lr is not None:
                scale = switch.lr / optim.lr
                curve["lr"] = curve["lr"][:at] + [v * scale for v in curve["lr"][at:]]
            else:
                notes.append("after the switch the base LR is the SWATS estimate (known only when training)")
        if switch.auto:
            notes.append(f"optim.switch.auto: {optim.name} -> {switch.to} when the SWATS criterion fires")
    title = f"{recipe.name}: schedule {sched_cfg.name}" + (" + warm-up" if sched_cfg.warmup else "")
    plot_schedule(curve, spe, title, make_parent(out, "--out"), notes, marks)

    lrs = curve["lr"]
    peak = max(range(total), key=lrs.__getitem__)
    line = (f"schedule {sched_cfg.name}: {epochs} epochs x {spe} steps = {total} steps; "
            f"lr {lrs[0]:.3g} at start, peak {lrs[peak]:.3g} at step {peak}, "
            f"min {min(lrs):.3g}, {lrs[-1]:.3g} at the last step")
    if curve["momentum"] is not None:
        moms = curve["momentum"]
        line += f"; momentum {min(moms):.3g}..{max(moms):.3g}"
    if sched.reactive:
        line += f" (assuming a flat {sched_cfg.monitor})"
    print(f"{line}; plot: {out}")
    return 0
