"""Export a trained run: pruned channel groups physically removed, ONNX with verification and a report.

`pipeline.export_run(ExportOptions(run_dir))` is the whole API; `compressor export` wraps it. This package
file imports nothing, so `compressor eval model.pt` (which needs only `modelfile`) skips onnxruntime.
"""
