#!/usr/bin/env python

##  semantic_segmentation.py

"""
This script should be your starting point if you wish to learn how to use the
mUNet neural network for semantic segmentation of images.  As mentioned elsewhere in
the main documentation page, mUNet assigns an output channel to each different type of
object that you wish to segment out from an image. So, given a test image at the
input to the network, all you have to do is to examine each channel at the output for
segmenting out the objects that correspond to that output channel.
"""

import random
import numpy
import torch
import os, sys


"""
seed = 0           
random.seed(seed)
torch.manual_seed(seed)
torch.cuda.manual_seed(seed)
numpy.random.seed(seed)
torch.backends.cudnn.deterministic=True
torch.backends.cudnn.benchmarks=False
os.environ['PYTHONHASHSEED'] = str(seed)
"""


##  watch -d -n 0.5 nvidia-smi

##  dlstudio-aspp: pick the loss and switch ASPP on or off here.
loss = 'mse'               ##  'mse' (stock) / 'dice' / 'dice+mse:20' / 'dice+mse:auto'
use_aspp = True            ##  False gives the stock mUNet, for comparison
aspp_rates = (2, 4, 6)     ##  dilation rates at the 8x8 bottleneck

from DLStudio import *
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))   ## the package folder beside this script also works
from dlstudio_aspp import SemanticSegmentationASPP
from dlstudio_aspp.errors import one_line_errors
one_line_errors()          ##  bad data or settings print one line instead of a traceback

dls = DLStudio(
#                  dataroot = "/home/kak/ImageDatasets/PurdueShapes5MultiObject/",
                  dataroot = "./data/PurdueShapes5MultiObject/",
                  image_size = [64,64],
                  path_saved_model = "./saved_model",
                  momentum = 0.9,
                  learning_rate = 1e-4,
                  epochs = 6,
                  batch_size = 4,
                  classes = ('rectangle','triangle','disk','oval','star'),
                  use_gpu = True,
              )

segmenter = SemanticSegmentationASPP( 
                  dl_studio = dls, 
                  max_num_objects = 5,
              )

dataserver_train = SemanticSegmentationASPP.PurdueShapes5MultiObjectDataset(
                          train_or_test = 'train',
                          dl_studio = dls,
                          segmenter = segmenter,
                          dataset_file = "PurdueShapes5MultiObject-10000-train.gz", 
                        )
dataserver_test = SemanticSegmentationASPP.PurdueShapes5MultiObjectDataset(
                          train_or_test = 'test',
                          dl_studio = dls,
                          segmenter = segmenter,
                          dataset_file = "PurdueShapes5MultiObject-1000-test.gz"
                        )
segmenter.dataserver_train = dataserver_train
segmenter.dataserver_test = dataserver_test

segmenter.load_PurdueShapes5MultiObject_dataset(dataserver_train, dataserver_test)

model = segmenter.mUNetASPP(skip_connections=True, depth=16, aspp=use_aspp, aspp_rates=aspp_rates)
#model = segmenter.mUNet(skip_connections=False, depth=4)

number_of_learnable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
print("\n\nThe number of learnable parameters in the model: %d\n" % number_of_learnable_params)
print(segmenter.describe(model, dls.image_size))

segmenter.run_code_for_training_for_semantic_segmentation(model, loss=loss)

#import pymsgbox
#response = pymsgbox.confirm("Finished training.  Start testing on unseen data?")
#if response == "OK": 

segmenter.run_code_for_testing_semantic_segmentation(model)

