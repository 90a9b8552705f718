"""FGVC experiment workbook library."""

import warnings

# huggingface_hub (imported by timm) imports tqdm.auto, which warns in a Jupyter kernel without ipywidgets;
# the workbook's own progress bar picks plain tqdm there, so the warning would only litter the reports.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
