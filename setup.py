"""dfstream: real-time deepfake detection and face swap for video streams."""
from setuptools import find_packages, setup

setup(
    name="dfstream",
    version="0.1.0",
    description="Real-time deepfake detection and face-swap pipeline for video streams",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline*", "engines*", "stages*", "runtime*", "train*", "bench*", "monitor*", "dfstream*"]),
    package_data={"engines": ["weights/*.onnx", "weights/*.json"], "monitor": ["templates/*.html"]},
    install_requires=[
        # torch is capped at the release this disk carries; a newer one is a multi-GB download
        "torch>=2.4,<=2.14.1",
        "torchvision>=0.19,<=0.29.1",
        "timm>=1.0",
        # 4.x: 5.0 no longer ships the Haar cascades our no-file fallback needs
        "opencv-python>=4.10,<5",
        "av>=14.1",  # 14.1: VideoFrame.rotation, to stand sideways phone video upright
        "insightface>=0.7.3",
        "onnxruntime>=1.20",
        "onnx>=1.17",
        "onnxscript>=0.2",
        "onnx2torch>=1.5",  # a face detector's ONNX trunk as a pretrained detector backbone
        "numpy>=1.26",
        "pyzmq>=26",
        "msgpack>=1.0",
        "click>=8.1",
        "pytorch-optimizer>=4.0",  # sharpness-aware minimisation (train --sam)
        "tqdm>=4.66",
        "scikit-learn>=1.4",
        "scipy>=1.15",  # bootstrap confidence intervals of the ROC-AUC (eval); 1.15: bootstrap(rng=)
        "scikit-image>=0.22",
        "tensorboard>=2.16",
        "matplotlib>=3.8",
        "prometheus-client>=0.20",  # the monitor's /metrics, in the format Prometheus scrapes
        "starlette>=0.40",  # the monitor's web server (dashboard, API, /metrics): small, async, typed routing
        "uvicorn>=0.30",  # serves the Starlette app from a thread of the monitor's process
        "jinja2>=3.1",  # the dashboard's HTML, autoescaped (camera names and URLs come from users)
        "python-multipart>=0.0.18",  # Starlette's form parser, for the /check upload
        "pyyaml>=6",  # dfstream monitor's config file
        "paho-mqtt>=2.0",  # dfstream monitor's MQTT sink (2.0: CallbackAPIVersion)
        "python-xlib>=0.33",  # -s window:TITLE: find a window by its title and follow it as it moves (X11)
    ],
    extras_require={
        "tensorrt": ["torch-tensorrt>=2.4,<2.15"],
        # av 18: Stream.set_display_rotation, with which the tests write a sideways clip
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "av>=18",
                "httpx>=0.27"],  # Starlette's TestClient, for the web server's route tests
    },
    entry_points={"console_scripts": ["dfstream=dfstream.cli.main:main"]},
)
