"""Training recipe (optional extra `train`, PyTorch on the CPU) that produces the ONNX ensembles in models/.

Entry points: `ichviewer train ...` (`ichviewer.commands.train`) and, from Python,
`ichviewer.training.recipe.run_recipe(RecipeConfig(out=...))`. Modules:

- `data`: balanced phantom case plans with disjoint seed ranges per split, the slice
  cache at model input size (built with the inference engine's own preprocessing),
  DICOM folders with per-slice or per-study label CSVs, patient-level splits.
- `networks`: four small families (VGG-, ResNet-, Inception-, MobileNet-style), each
  ending in global average pooling, a linear layer and six sigmoid outputs.
- `losses`: class-weighted BCE (Lee et al. 2019, Eq. 2-3).
- `augmentation`: slice interpolation (Eq. 4) and rotation / scaling / translation /
  median-filter augmentation.
- `trainer`: one member: training loop, validation mAP model selection, resumable
  checkpoints, interpolation-degree choice.
- `export`: ONNX export under the inference contract, verified against PyTorch.
- `ensembling`: unweighted mean (default) or Kang et al.-style weighted ensembles,
  per-label high-sensitivity thresholds and triage thresholds, all on validation.
- `recipe`: the whole run, writing manifest.json, SHA256SUMS and training_log.json.

Where this recipe departs from Lee et al. 2019 (Methods) and why:

1. Networks: small from-scratch versions of each family (tens to hundreds of
   thousands of parameters) instead of ImageNet-pretrained VGG16 / ResNet-50 /
   Inception-v3 / Inception-ResNet-v2: nothing can be downloaded, training must fit
   60 minutes on 2 CPU cores, and all ONNX files together must stay far below 40 MB.
   A MobileNetV2-style member replaces Inception-ResNet-v2 (Kang et al. used MobileNetV2).
2. Input size: 128 x 128 (configurable) instead of 512 x 512, for the same budget.
   The whole field of view is resampled (antialiased) to the input, as the inference
   engine does; the translation range is scaled with it (+-12 px at 512 -> +-3 px at 128).
3. Optimiser: AdamW (peak lr 3e-3) with a one-cycle learning-rate schedule over a
   fixed number of steps (default 5 epochs x 500 steps), instead of SGD with Nesterov
   momentum (lr 0.001, decayed 3x on plateaus) for fine-tuning: from-scratch training
   in a few thousand CPU steps needs a faster optimiser, and a fixed step count keeps
   the run reproducible and its duration predictable. Weight decay 5e-5 as in the
   paper. Batch: 16 slices, i.e. 48 images with the two Eq. 4 interpolations (paper: 64).
4. Model selection: the epoch with the best validation mAP (as in the paper), computed
   without slice interpolation per epoch; the inference interpolation degree is then
   chosen per model on validation among 1 and 3 (the paper: 3, 5, 7, 9; degree 1 = none).
5. Denoising augmentation: a 3x3 median filter applied to a random half of the images
   (phantoms have no scanner-denoised series to choose from).
6. Data: synthetic phantoms (`ichviewer.core.phantom`) generated at a 256 matrix
   (same field of view as 512, a quarter of the generation time; the model input is
   128 px either way), or a site's DICOM with labels. Study-level label CSVs train by
   multiple-instance learning (the max of the slice logits meets the study labels,
   bags of at most 32 evenly spaced slices, no slice interpolation), because a
   study label says nothing about which slice bleeds.
7. Ensembles: the unweighted mean is the default, as in the paper. "weighted" follows
   Kang et al. in spirit (members weighted by how they complement each other);
   lacking segmentations, weights are found by exhaustive search on a 0.1 simplex
   grid maximising validation mAP, each member keeping at least 0.1. Specialist
   members (Kang et al.: SDH, SAH, small bleeds) train on their positives plus all
   negative cases.
8. Images are cached as 8-bit windows (like the paper's 8-bit window images); the
   engine feeds unquantised floats, a difference of at most 0.5/255 per channel.
9. Sampling: each batch holds a fixed share (default half) of slices with haemorrhage,
   and every sample carries the importance weight p_uniform / p_drawn, so the expected
   loss is exactly Eq. 2 with Eq. 3 weights over the training set (as with the paper's
   uniform sampling) but its variance is much lower: with uniform batches of 16 a rare
   subtype's positive arrives every few dozen steps with an Eq. 3 weight in the
   hundreds. On a 160-case check run this doubled validation mAP after 500 steps.
   `--positive-fraction 0` restores uniform sampling.
10. MobileNet-style member: two plain strided convolutions before the first depthwise
   block, because PyTorch's CPU depthwise backward is slow at 64 x 64.
"""
