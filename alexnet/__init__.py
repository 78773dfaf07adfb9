"""What the scripts on top share, one job a module; a script imports these, never another script.

settings     every training option, declared once; the recipes; the command line
checkpoint   the model file: build, load, upgrade, field checks, resume checks, update
classifier   a .pth or .onnx model ready to classify files (predict.py, evaluate.py, app.py)
loaders      the training and validation loaders of a run
trainer      model, optimizer, loss, schedule, EMA, mixing; one optimizer step
budget       how many epochs at which crop sizes: --epochs, or --budget from measured costs
preemption   stopping on a signal and resuming at the very step
figures      every figure the scripts draw
data, device_data, images, folders, lookalike, splitting    reading and preparing images
machine, outputs, errors, startup, stats, board, predictions, shapes    the rest
"""
