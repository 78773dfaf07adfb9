"""What the scripts on top share, one job a module; a script imports these, never another script.

settings     every training option, declared once; the recipes; the command line
checkpoint   the model file: build, load, upgrade, field checks, resume checks, update
classifier   a .pth or .onnx model ready to classify files (predict.py, evaluate.py, app.py)
datasets     train.py's ImageFolders: the safe folder walk and the decode-once cache
transforms   the evaluation transform, the training augmentation, normalisation, PCA lighting
loaders      the loaders around train.py's two datasets: samplers, shards, batches on the device
trainer      model, optimizer, loss, schedule, EMA, mixing (the step itself is train.py's)
budget       how many epochs at which crop sizes: --epochs, or --budget from measured costs
preemption   stopping on a signal and resuming at the very step
figures      every figure the scripts draw
decoding, device_data, images, folders, lookalike, class_balance, splitting    reading and sorting images
machine, outputs, errors, startup, stats, board, predictions, shapes, diagnosis, lr_finder    the rest
"""
