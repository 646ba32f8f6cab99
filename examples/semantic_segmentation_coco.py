#!/usr/bin/env python

##  semantic_segmentation_coco.py

"""
The stock semantic_segmentation.py recipe, on a COCO set built with

    dlstudio-aspp build-coco --coco-root /path/to/coco --classes cake dog motorcycle --out ./data/coco_seg

mUNet(+ASPP) with one output channel per COCO class, at 256x256.
"""

import os, sys

##  dlstudio-aspp: pick the loss and switch ASPP on or off here.
recipe = 'modern'          ##  'modern' (AdamW, one-cycle, BCE+Dice on logits) / 'stock' (the homework's SGD + MSE)
loss = None                ##  None: the recipe's; or 'mse' / 'dice' / 'dice+mse:20' / 'bce+dice' ...
head = 'dense'             ##  'dense': every output pixel is predicted; 'stock': stock mUNet's 1-in-4 output layer
use_aspp = True            ##  False gives the stock mUNet, for comparison
aspp_rates = (2, 4, 6)     ##  chosen for an 8x8 bottleneck; at 256x256 it is 32x32: consider (6, 12, 18)
coco_set = "./data/coco_seg/"

from DLStudio import *
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))   ## the package folder beside this script also works
from dlstudio_aspp import SemanticSegmentationASPP, COCOSegmentationDataset
from dlstudio_aspp.data.coco import read_index
from dlstudio_aspp.errors import one_line_errors
one_line_errors()          ##  bad data or settings print one line instead of a traceback

classes = tuple(read_index(coco_set)["classes"])

dls = DLStudio(
                  dataroot = coco_set,
                  image_size = [256,256],
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

model = segmenter.mUNetASPP(skip_connections=True, depth=16, num_classes=len(classes), aspp=use_aspp, aspp_rates=aspp_rates,
                            head=head)

number_of_learnable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("\n\nThe number of learnable parameters in the model: %d\n" % number_of_learnable_params)
print(segmenter.describe(model, dls.image_size))

segmenter.run_code_for_training_for_semantic_segmentation(model, loss=loss, recipe=recipe)

segmenter.run_code_for_testing_semantic_segmentation(model)
