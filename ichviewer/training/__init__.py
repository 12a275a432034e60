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
  per-label high-sensitivity thresholds and triage thresholds, on validation (the
  thresholds also on `--calibration-cases`, departure 21).
- `recipe`: the whole run, writing manifest.json, SHA256SUMS and training_log.json.
- `recalibrate`: the operating points of a trained phantom ensemble chosen again on its own
  validation cases, without retraining (departure 25).

Where this recipe departs from Lee et al. 2019 (Methods) and why:

1. Networks: small from-scratch versions of each family (tens to hundreds of
   thousands of parameters) instead of ImageNet-pretrained VGG16 / ResNet-50 /
   Inception-v3 / Inception-ResNet-v2: nothing can be downloaded, training must fit
   60 minutes on 2 CPU cores, and all ONNX files together must stay far below 40 MB.
   A MobileNetV2-style member replaces Inception-ResNet-v2 (Kang et al. used MobileNetV2).
2. Input size: 128 x 128 by default (configurable) instead of 512 x 512, for the same
   budget; the bundled ensemble takes 256 x 256 through a learned 2x stem (departure 17).
   To spend those pixels on brain rather than air, the input is a square around the
   head (`--crop head`, manifest `input.crop`; the inference engine does the same),
   not the whole field of view: on the phantoms the head then fills about 90 % of
   the input instead of about 55 %, nearly doubling the linear resolution at no cost.
   The translation range is scaled with the input (+-12 px at 512 -> +-3 px at 128).
3. Optimiser: AdamW (peak lr 3e-3) with a one-cycle learning-rate schedule over a
   fixed number of steps (default 10 epochs x 500 steps; the bundled recipe 8 x 450),
   instead of SGD with Nesterov momentum (lr 0.001, decayed 3x on plateaus) for
   fine-tuning: from-scratch training
   in a few thousand CPU steps needs a faster optimiser, and a fixed step count keeps
   the run reproducible and its duration predictable. Weight decay 5e-5 as in the
   paper. Batch: 32 slices (paper: 64 images).
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
   By default a 5 mm phantom slice is its centre plane; `--thickness-planes K` builds
   it from K planes across its thickness (partial volume, as real thick slices and
   slab-averaged thin series have; about 1.9x the generation time for K = 3, 2.9x for
   K = 5). Normal heads read as point-sampled 5 mm, thickness-integrated 5 mm and 1 mm
   series score 0.22, 0.49 and 0.80 with the stem ensemble trained on point samples.
   `--thickness-planes 1,3` mixes the two per case. Neither is in the bundled recipe:
   trained on integrated or mixed slices the ensemble scored 0.892 and 0.904 on the
   point-sampled development set against 0.916 (0.850 and 0.837 against 0.816 on an
   integrated one; models/EXPERIMENTS.md, stop 12).
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
11. Windows: brain (W80/L40), subdural (W200/L80) and bone (W2800/L600) instead of
   Lee et al.'s tissue/brain/blood (`--windows lee` restores them). Lee et al.'s three
   windows all end at or below 100 HU, so calcification, metal and bone saturate to
   the same value as dense blood; on the first bundled run (Lee windows) every
   mimic-only negative was called positive. Brain/subdural/bone keep the blood-brain
   contrast and separate the hundreds-of-HU mimics from blood.
12. Slice interpolation in training (`--interpolation sample`): each slice of a batch
   is replaced at random by itself or one of its two Eq. 4 interpolations (beta drawn
   per batch from (0.5, 1) as in the paper), instead of putting all three in the
   batch. The interpolated images are the same; each step sees three times as many
   distinct slices for the same compute. `--interpolation all` restores the paper's.
13. Thin slices: series thinner than about 2.5 mm are averaged into ~5 mm slabs before
   the model (`--slab-mm 5`, manifest `input.slab_mm`; the engine does the same), as
   readers view thin series as thick reformats. A 1 mm slice has about twice the noise
   of a 5 mm one, and a case score that is the maximum over 140 noisy slices called
   most normal thin series positive in the first run. Eq. 4 interpolation then mixes
   neighbouring slabs.
14. Counterfactual twins (`--no-twins` turns them off): every training haemorrhage
   phantom is joined by its twin, the same head (same anatomy, mimic, noise) without
   the bleed (`data.add_twin_negatives`). Lee et al. had real scans and no such twins;
   on phantoms they make slice level, anatomy and noise useless as shortcuts, so the
   small networks must learn the blood itself. The first run without them called
   normal basal-ganglia-level slices "SAH" at 0.8. Validation cases have no twins.
15. Hard-example mining (option, off by default: `--hard-fraction F`): a share F of each
   batch's positives and negatives is drawn among the slices already trained on, with
   probability proportional to the loss each had when last seen; the rest follows the
   usual walk, so every slice is still visited (`trainer.StratifiedSampler`). Meant for
   the slices that decide a case read by its highest slice: normal basal cisterns,
   calcified falx, thin-series skull base, faint small bleeds. On a 300-case
   development set it did not help one Inception member after 3,000 steps (dev case
   AUC 0.791 with bf16, against 0.803 for bf16 alone; models/EXPERIMENTS.md), so the
   bundled recipe does not use it.
16. bfloat16 autocast of the training forward pass (option: `--precision bf16`): about
   1.35x faster steps on this AVX-512-BF16 CPU over the four families (ResNet 1.8x,
   MobileNet none). Weights, optimiser, loss, validation and the exported ONNX stay
   float32. The bundled recipe uses it.
17. Input stem (option, off by default: `--input-stem` with twice the `--input-size`, e.g.
   256): a learned strided 3x3 convolution and a 1x1 back to three channels in front of each
   network (`networks.make_input_stem`), so the network sees the slice at about its native
   0.9 mm pixels while every later layer, the CAM grid and the atlas features keep their
   size. One Inception member, 3,000 steps with bf16: development-set case AUC 0.864 against
   0.803 at 128 pixels, punctate bleeds 0.61 against 0.51, at about 2.3x the step time
   (models/EXPERIMENTS.md). The bundled recipe uses it (`--input-size 256 --input-stem`,
   8 epochs of 450 steps): validation case AUC 0.942 against 0.888 for the 128-pixel
   ensemble, in about 50 minutes once the step builds one interpolated image per slice
   instead of three and the median filter works in place.
18. Case-balanced positives (option, off by default: `--positive-sampling case`): the
   positive half of each batch is drawn so that every bleeding case gets the same share,
   its positive slices sharing its turns, instead of every positive slice equally often
   (`trainer.StratifiedSampler`). Slice by slice, a punctate bleed on one or two slices
   is about 3 % of the positive draws although such cases are about a sixth of the
   bleeding cases, and a case is read by its highest slice. The importance weights are
   not changed: the emphasis on small bleeds is intended. One Inception member gained on
   the development set (case AUC 0.898 against 0.864, punctate 0.69 against 0.61), the
   four-member bundled recipe did not (0.920 against 0.916, slice-level AUC 0.928 against
   0.951; models/EXPERIMENTS.md), so the bundled recipe does not use it.
19. Lesion-map loss (option, off by default: `--lesion-map-weight W`, phantoms only): Lee
   et al. had slice labels only; a phantom also knows where its blood is. The training
   cache then keeps each slice's subtype masks in the model input's frame at 1/8 of its
   size (`data.lesion_maps`), moved by the same augmentation and mixed by the same Eq. 4
   ratios as the image. An auxiliary 1x1 convolution on the last convolutional features
   predicts them (six channels, ANY the union), with a binary cross-entropy that weighs the
   blood cells and the blood-free cells of each label equally (`trainer.lesion_map_loss`),
   added to Eq. 2 with weight W. The head sits beside the network and is never exported:
   the classifier is still GAP, one linear layer and sigmoids, and the inference contract is
   unchanged. The aim is the punctate bleeds: a label says a slice has blood, the map says
   which cell of the 16 x 16 feature grid, so a two-pixel sliver against the inner table
   gets a direct signal.
   One Inception member, 3,000 steps with the stem and bf16: development-set case AUC 0.890
   with W = 1 and 0.890 with W = 3, against 0.864 without (punctate 0.65 and 0.67 against
   0.61). The four-member bundled recipe with W = 3 gained much less (0.921 against 0.916,
   slice-level AUC equal, 48 minutes; models/EXPERIMENTS.md), below the +0.01 set beforehand
   for shipping it, so the bundled recipe does not use it.
   `--lesion-map-stride 8` puts the head on a finer block instead: each family's last block
   at stride 8 (`networks.body_taps`), 32 x 32 cells of about 6 mm at the 256-pixel input, so
   a punctate sliver has a cell of its own. The network reads it through a training-only
   forward hook (`trainer.lesion_map_tap`); export is unchanged. The bundled recipe with it
   (W = 3, 44.7 minutes) scored 0.910 on the development set against the shipped 0.916
   (punctate 0.705 against 0.716; models/EXPERIMENTS.md, stop 15), so it is not used either.
20. ANY from the subtypes (`--any-rule noisy-or`, in the bundled recipe): Lee et al. read
   "any haemorrhage" from its own sixth output. With it, the manifest says `"aggregation":
   {"any": "noisy-or"}` and the engine makes each slice's ANY from the ensemble's five
   subtype probabilities, 1 - prod(1 - p_s) (`ichviewer.inference.findings.apply_any_rule`);
   the ensemble weights and operating points are chosen on validation with the same rule.
   The networks and their training are unchanged. Under Eq. 3 the subtype heads, whose
   positives are rare and weigh more, are the more sensitive to small bleeds: on the
   development set the shipped members' ensemble scores 0.945 against 0.916 (DeLong p = 0.01;
   punctate bleeds 0.812 against 0.716; models/EXPERIMENTS.md, stop 19). The scores are then
   not calibrated probabilities (normal heads score higher), so only operating points chosen
   with the rule are meaningful. The ANY attention map follows the rule too: the subtype maps
   mixed by each subtype's share of the noisy-OR (`ichviewer.inference.cam.noisy_or_any_weights`).
21. Operating points on more cases than validation (option, off by default:
   `--calibration-cases N`, phantoms only): N further validation-split phantoms, never used
   for model selection or ensemble weights, are pooled with the validation cases to place the
   per-label thresholds and the triage thresholds. Lee et al. chose operating points on their
   validation set. With 200 calibration cases the bundled recipe wrote identical networks and
   the same triage thresholds, a lower specificity on the development set and more false
   "confident positive" calls (models/EXPERIMENTS.md, stop 19), so the bundled recipe does not
   use it; it is for sites whose validation split is small.
22. Noisy-OR ANY loss (option, off by default: `--noisy-or-any-weight W`): with `--any-rule
   noisy-or` the app ranks studies by q = 1 - prod_s (1 - p_s) of the five subtypes, but Eq. 2
   trains each subtype head alone, and Eq. 3's large positive weights for rare subtypes leave
   their probabilities high on normal slices, which the product then multiplies. This adds
   W times the class-weighted BCE of q against the ANY label to each sample's loss
   (`losses.noisy_or_any_bce_per_sample`; with study labels, on each subtype's bag maximum).
   Lee et al. have no such term. Measured in models/EXPERIMENTS.md (stop 21).
23. Wide input stem (option, off by default: `--wide-stem`, with `--input-stem`): the stem of
   departure 17 ends in a 1x1 convolution back to three channels, so everything it saw at
   the native pixel size reaches the network as three linear mixtures at half the size. With
   the wide stem its 16 feature channels go straight into each network's first convolution
   (`networks.make_input_stem(wide=True)`). Meant for the punctate extra-axial slivers, one
   pixel wide against the inner table. Measured (2 threads, batch 32, 256 px, bf16) it costs
   no step time: VGG 84 -> 69 ms, ResNet 100 -> 99, Inception 87 -> 79, MobileNet 122 -> 125
   (oneDNN handles 16 input channels better than 3). Measured in models/EXPERIMENTS.md (stop 22).
24. Invisible positives left out of the loss (option, off by default:
   `--ignore-invisible-positives`, phantoms only): a phantom's slice label is 1 wherever its
   mask has a voxel, but where every voxel of that label lies in the skull's partial-volume
   edge (`phantom.visible_blood_by_slice`: none two pixels from bone) no reader could see it,
   and a reader's slice label (RSNA-style) would be 0. Training on them teaches the networks
   that the inner table's edge is blood. The training split's `known` mask drops those
   entries (6.7 % of positive slices in 80 training-like phantoms); validation keeps every
   label, since it is scored as the test set is. Measured in models/EXPERIMENTS.md (stop 23).
25. Triage rates at a clinical prevalence (default; `--triage-prevalence P`, 0.10 unless told,
   'observed' for the old rule). Not Lee et al.'s: the triage is DeepRadiologyNet's, whose miss
   rate among auto-reported studies was measured on a clinical stream, where few studies bleed.
   Our validation set is balanced (half bleed), and there no useful threshold can reach a 1 %
   miss rate. The thresholds are now chosen for the rates they would have at prevalence P
   (Bayes' rule on validation FNR and TNR; `ichviewer.evaluation.triage`), and never contradict
   the ANY call: a confident negative is below the ANY threshold, a confident positive above it.
   An already trained ensemble gets them without retraining: `python -m
   ichviewer.training.recalibrate DIR` (rebuilds and re-scores the same validation cases, checks
   it reproduced the training run, then rewrites the manifest, log and checksums).
26. Head pooling (option, default "avg": `--pooling lse|max`): Lee et al. end each network in
   global average pooling and a linear layer, so a punctate bleed that lights one of the 256
   cells moves the logit by 1/256 of that cell's evidence. With "lse" (log-sum-exp, sharpness
   `manifest.LSE_SHARPNESS`) or "max" the linear layer is applied to every cell and the
   per-cell logits are pooled (`networks.build_network`, `manifest.pool_cell_logits`; the
   manifest's `cam.pooling` tells the engine). Measured in models/EXPERIMENTS.md (stop 24).
27. Twin rank loss (option, off by default: `--twin-rank-weight W` with `--pair-twins`): every
   training haemorrhage phantom has a counterfactual twin, the same head without the bleed.
   With the option each paired twin is shown in its bleeding slice's pose (the same Eq. 4
   blend and augmentation draws), so the two images differ only by the blood, and W times the
   logistic pairwise loss ln(1 + exp(a_twin - a_bleed)) on the noisy-OR ANY logit a
   (`losses.twin_rank_loss_per_pair`) is added to the batch's loss. Lee et al. train on labels
   alone; this asks the networks to rank the blood, not the head it lies in, which is what a
   sliver against the inner table must be found by. Measured in models/EXPERIMENTS.md (stop 25).
28. A second, specific threshold per subtype (default; `--min-specificity S`, 0.95 unless told):
   Lee et al. choose one high-sensitivity operating point per label, which names a subtype on
   little evidence (the shipped SAH threshold is 0.12; held-out SAH calls had a PPV of 0.21).
   Besides it, each subtype with validation positives gets the lowest threshold whose validation
   specificity is at least S, never below the sensitive one
   (`evaluation.choose_specificity_threshold`), written to the manifest as
   `operating_points.specific_thresholds`: a called subtype reaching it reads "positive", one
   below it "possible" (`ichviewer.core.decisions`). No call changes; the study's decision and the
   sensitive thresholds are as before.
29. Hard-negative mining (option, off by default: `--hard-fraction F --hard-stratum negative`):
   Lee et al. walk the training slices uniformly. With it, F of each batch's negative quota is
   drawn in proportion to each negative slice's last training loss (`trainer.StratifiedSampler`);
   the positives keep their walk, because a positive whose bleed is invisible keeps a high loss
   that no network can lower. The negatives that look like blood (calcified falx and pineal, the
   slab-averaged skull base of thin series) are the ones a faint bleed has to rank above.
   Measured in models/EXPERIMENTS.md (stop 27).
30. Context slices (option, default 1: `--context-slices 3`): Lee et al. show each network one
   slice, or with Eq. 4 one slice blended with a neighbour, slice s always dominant. With 3, each
   input holds the slice's lower neighbour, the slice and its upper neighbour as nine channels
   (three windows each; `data.SliceCache.context_images`), so a network can compare them: a
   punctate bleed lies on one 5 mm slice, the inner table's partial-volume edge on every slice.
   Eq. 4 is kept and blends whole stacks; labels are slice s's. Only the first convolution
   grows. The manifest says `input.context_slices: 3`, and every reader of the model (engine,
   attention map, atlas) builds the same stacks. Measured in models/EXPERIMENTS.md (stop 31).
31. Thickness-matched positives (option, off by default: `--positive-sampling thickness`): Lee
   et al. sample slices as they come. On the phantom mix a thin series' SAH spans dozens of
   overlapping 5 mm slabs, so about half of the positive slices are thin against a third of the
   negative ones (600 development studies: 0.49 and 0.33), and 73 % of the SAH slices are thin:
   a thin slab's look is then evidence of haemorrhage in itself, which every normal thin series
   inherits (their case scores, 0.79-0.95, are the highest of all negatives). The positive half
   of each batch is drawn so that thin slices are the same share of it as of the negatives
   (`trainer.thickness_matched_probabilities`); the importance weights are not changed, since
   the changed training distribution is the point. Measured in models/EXPERIMENTS.md (stop 33).
32. Thickness-weighted positives (option, off by default: `--positive-sampling thickness-weight`):
   the same confound as 31, removed in the loss instead of the draws. The positives are drawn as
   they come (row for row the recipe's draws), and each thin positive slice's importance weight is
   multiplied by the odds ratio [q / (1 - q)] / [p / (1 - p)] (p, q: thin share of the positive and
   the negative slices; about 0.51 on the phantom mix), so that in the weighted loss thin slices are
   as large a share of the positives as of the negatives (`trainer.thin_positive_weight_factor`).
   Unlike 31 nothing is re-drawn, so the 5 mm bleeds keep exactly the recipe's weight against the
   5 mm negatives: with 31 the freed draws went to 5 mm blood and the 5 mm negatives rose (stop 33).
   Measured in models/EXPERIMENTS.md (stop 34).
33. Mimic-map loss (option, off by default: `--mimic-map-weight W`, phantoms only): Lee et al.
   train on labels alone, and so did 19 for the blood; neither tells a network what a dense
   non-blood focus is, only that it is not blood. The 5 mm calcification mimics are 90 of the
   300 development negatives and hold a third of the shipped ensemble's discordant pairs (stop
   34). The generator knows the mimic's voxels (`PhantomCase.mimic_mask`: a calcification's or
   catheter's focus with its partial-volume rim, the metal, and streak pixels lifted by at least
   `phantom.MIMIC_STREAK_HU`), so the training cache keeps them as a sixth map channel
   (`data.MAP_CHANNELS`), moved and blended with its slice like the lesion maps, and the
   auxiliary head (a 1x1 convolution on the last features, not exported) learns it with the
   same balanced cross-entropy (`trainer.auxiliary_map_loss`). The pixels are unchanged: the
   mask is read from the shapes the mimic is painted with, no random draw is added.
   Measured in models/EXPERIMENTS.md (stop 35).
34. A fourth input window (`--windows brain-blood-subdural-bone`, in the bundled recipe since stop
   36; the recipe's default is still brain/subdural/bone, so older commands mean what they did): Lee
   et al. feed three windows including a narrow blood window (WL 60, WW 40); departure 11 replaced
   theirs with brain/subdural/bone so that the mimics stay apart from blood. This set keeps those
   three and adds Lee et al.'s blood window as a fourth channel: acute blood against brain spans
   about half of its 8-bit range, twice the brain window's contrast, for the punctate bleeds the
   target turns on (`windowing.BRAIN_BLOOD_SUBDURAL_BONE_WINDOWS`). The input stem takes any number
   of channels; the manifest records the windows, so the engine feeds the same four.
   Measured in models/EXPERIMENTS.md (stops 35-36): development AUC(ANY) 0.9716 and 0.9734 at seeds
   0 and 1 against the three-window recipe's 0.9638 and 0.9571; held-out 0.978 against 0.965.
35. The explaining member (attention maps and atlas) is chosen, not fixed: Lee et al. showed their
   ResNet-50's maps, having chosen it by how often its maps found the radiologists' bleeding points;
   the recipe named its ResNet-style member outright, and on the four-window run that member's maps
   found 20 of 55 validation lesions against 40 for its Inception-style one. `ichviewer train` now
   scores every member's maps on its own validation phantoms and takes the best
   (`ichviewer.training.explainer`; phantom data only, a DICOM source keeps the ResNet-style member).
"""
