"""``dfstream monitor CONFIG.yaml``: watch cameras until stopped, raise alerts with evidence."""
from __future__ import annotations

import logging
import sys

import click

CONFIG_ERROR_EXIT = 2  # as click's own usage errors


@click.command("monitor")
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="Only check the config file (and that its models resolve), then exit.")
def monitor_command(config_path: str, check: bool) -> None:
    """Watch the cameras of CONFIG.yaml: one detection run per camera, kept up for months.

    Each camera is retried with backoff while it is down; a track held fake, a camera gone
    offline and back raise alerts, each with evidence (snapshot, clip, score timeline, their
    sha256) stored under storage.folder and queued on disk for the webhooks and MQTT broker
    until they acknowledge. See monitor.example.yaml for every key.

    \b
    Signals: SIGHUP reloads CONFIG.yaml (cameras added, removed or changed; the others keep
    running); SIGTERM or Ctrl-C stop it, alerts still queued are sent at the next start.
    Exit status: 0 stopped, 2 bad config, 1 other failure.

    \b
    Examples:
      dfstream monitor monitor.yaml --check
      dfstream --log-level info monitor monitor.yaml
    """
    from monitor.config import ConfigError, load_config
    from runtime.run_config import RunOptionError

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        click.echo(f"dfstream monitor: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    from monitor.service import MonitorService

    service = MonitorService(config)
    try:
        service.resolve_models()
    except RunOptionError as exc:
        click.echo(f"dfstream monitor: {config_path}: model: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    if check:
        from monitor.service import camera_fake_rule

        click.echo(f"{config_path}: OK ({len(config.cameras)} camera(s), "
                   f"{len(config.sinks.webhooks) + (config.sinks.mqtt is not None)} sink(s))")
        for camera in config.cameras:  # the alert rule in numbers: unset thresholds follow the model's verdict
            rule = camera_fake_rule(camera, config, service.metadata)
            click.echo(f"  {camera.name}: fake alert at smoothed P(fake) >= {rule.on_threshold:.3f} held "
                       f"{rule.min_seconds:g} s, re-armed below {rule.off_threshold:.3f}"
                       + ("" if camera.enabled else " (disabled)"))
        return
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logging.getLogger("dfstream.monitor").setLevel(logging.INFO)  # a service says what it does
    service.start()
    service.run_forever()
