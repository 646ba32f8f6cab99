from setuptools import find_packages, setup

setup(
    name="dlstudio-aspp",
    version="0.1.0",
    description="ASPP at the mUNet bottleneck, pluggable losses, COCO and SAM tools for DLStudio's semantic segmentation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dlstudio_aspp", "dlstudio_aspp.*"]),
    python_requires=">=3.9",
    install_requires=[
        "DLStudio>=2.3,<2.6",  # the release lines dlstudio_glue.SUPPORTED_DLSTUDIO accepts
        "torch",
        "torchvision",
        "pycocotools",
        "numpy",
        "matplotlib",
        "pillow",
        "tqdm",
        # sam-compare --sam-masks: cut-outs and screenshots found in the exported images (template matching, SIFT)
        "opencv-python-headless",
        # report.pdf: Markdown read by markdown-it-py, pages laid out by ReportLab (pip only: no browser, no LaTeX)
        "markdown-it-py",
        "reportlab",
        # report.ipynb: written by nbformat, executed by nbclient in a Python kernel
        "nbformat",
        "nbclient",
        "ipykernel",
        # DLStudio imports these at import time but does not declare them.
        "pymsgbox",
        "torchmetrics",
    ],
    extras_require={
        "sam": ["segment-anything"],
        "ray": ["ray"],
        "tensorboard": ["tensorboard"],
        "test": ["pytest", "pytest-cov", "pypdf", "segment-anything", "ray", "tensorboard"],
    },
    entry_points={"console_scripts": ["dlstudio-aspp=dlstudio_aspp.cli:main"]},
)
