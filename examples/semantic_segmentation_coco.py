#!/usr/bin/env python

##  semantic_segmentation_coco.py

"""
The stock semantic_segmentation.py recipe, on a COCO set built with

    dlstudio-aspp build-coco --coco-root /path/to/coco [/path/to/another ...] --classes person --size 96 --out ./data/coco_seg

(or by this script from `coco_roots` below, when the set is not there yet).

mUNet(+ASPP) with one output channel per COCO class, at the set's size. By default it trains
with the 'coco' recipe, as `dlstudio-aspp run --dataset coco` does: standard augmentation,
inputs normalised by the training images, every training image trained on and the last
weights kept, a budget of 11000 iterations whatever the set holds (about 81 minutes on 2 CPU
cores at depth 4 and 96x96, as measured in benchmarks/RESULTS.md), ASPP rates for the set's bottleneck. For the homework's size on a
GPU: build at 256, set depth = 16 and options = dict(epochs=150). The test report prints the
floors (every pixel the class, the best fixed mask) beside the model's IoU.
"""

import os, sys

##  dlstudio-aspp: pick the loss and switch ASPP on or off here.
recipe = 'coco'            ##  'coco' (modern, depth 4, 11000 iterations, last weights) / 'modern' / 'stock' (the homework's SGD + MSE)
loss = None                ##  None: the recipe's; or 'mse' / 'dice' / 'dice+mse:20' / 'bce+dice' ...
head = 'dense'             ##  'dense': every output pixel is predicted; 'stock': stock mUNet's 1-in-4 output layer
use_aspp = True            ##  False gives the stock mUNet, for comparison
depth = 4                  ##  the coco recipe's, for a CPU; 16 is stock's (for a GPU at 256x256)
aspp_rates = None          ##  None: by the bottleneck (2,4,6 up to 128x128, 6,12,18 at 256x256); or e.g. (2, 4, 6)
coco_set = "./data/coco_seg/"
coco_roots = []            ##  COCO folders to build coco_set from when it is not built yet, e.g. ['/data/coco', './my_export']
coco_classes = ['person']  ##  the classes to build (with coco_roots)
options = {}               ##  more run options, e.g. dict(epochs=150) on a GPU (see `dlstudio-aspp run --help`)

from DLStudio import *
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))   ## the package folder beside this script also works
from dlstudio_aspp import SemanticSegmentationASPP, COCOSegmentationDataset
from dlstudio_aspp.data.coco import read_index
from dlstudio_aspp.spec import rates_for
from dlstudio_aspp.errors import one_line_errors
one_line_errors()          ##  bad data or settings print one line instead of a traceback

if coco_roots and not os.path.isfile(os.path.join(coco_set, "index.json")):
    from dlstudio_aspp.data.coco_build import build_coco
    build_coco(coco_roots, coco_set, classes=coco_classes, size=96)   ##  96x96 for a CPU; 256 on a GPU
index = read_index(coco_set)
classes, size = tuple(index["classes"]), index["settings"]["size"]

dls = DLStudio(
                  dataroot = coco_set,
                  image_size = [size,size],
                  path_saved_model = "./saved_model_coco",
                  momentum = 0.9,
                  learning_rate = 1e-4,
                  epochs = 6,
                  batch_size = 4,
                  classes = classes,
                  use_gpu = True,
              )

segmenter = SemanticSegmentationASPP( 
                  dl_studio = dls, 
                  max_num_objects = 5,
              )

dataserver_train = COCOSegmentationDataset(
                          train_or_test = 'train',
                          dl_studio = dls,
                          segmenter = segmenter,
                        )
dataserver_test = COCOSegmentationDataset(
                          train_or_test = 'test',
                          dl_studio = dls,
                          segmenter = segmenter,
                        )
segmenter.dataserver_train = dataserver_train
segmenter.dataserver_test = dataserver_test

segmenter.load_PurdueShapes5MultiObject_dataset(dataserver_train, dataserver_test)

model = segmenter.mUNetASPP(skip_connections=True, depth=depth, num_classes=len(classes), aspp=use_aspp,
                            aspp_rates=aspp_rates or rates_for(dls.image_size),
                            head=head)

number_of_learnable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("\n\nThe number of learnable parameters in the model: %d\n" % number_of_learnable_params)
print(segmenter.describe(model, dls.image_size))

segmenter.run_code_for_training_for_semantic_segmentation(model, loss=loss, recipe=recipe, **options)

segmenter.run_code_for_testing_semantic_segmentation(model)
