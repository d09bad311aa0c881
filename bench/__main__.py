"""``python -m bench ...`` is ``dfstream bench ...``."""
from pipeline.cli_bench import bench_command

if __name__ == "__main__":
    bench_command.main(prog_name="python -m bench")
