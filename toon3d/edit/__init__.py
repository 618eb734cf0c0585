"""Stage 2: expression edits (paper III-C): SeFa directions, their names, and identity-preserving refinement.

- `toon3d.edit.directions`: closed-form factorisation (rosinality | sefa, optional W+ layer range),
  the seed code's `factor.pt`, applying a direction to W / W+ codes.
- `toon3d.edit.landmarks`: dlib's 68 landmarks on aligned toon3d images and the expression
  measures read from them.
- `toon3d.edit.naming`: what each direction changes, and `smile` / `mouth_open` / ... → (index, sign).
- `toon3d.edit.masks`: the fixed face mask used until a face parser is available.
- `toon3d.edit.refine`: `refine_direction`, the paper's and the released code's refinement.
"""
