"""Where a face sits in every toon3d image, as fractions of the image size.

SynFace renders and the cartoon set are aligned to the same layout, close to FFHQ's
alignment (eyes slightly above the centre, mouth at about 70% height), so the two
domains can share one generator and one 3D stage.
"""

EYE_Y = 0.46          # eye line, fraction of height from the top
EYE_LEFT_X = 0.385    # centre of the image-left eye
EYE_RIGHT_X = 0.615   # centre of the image-right eye
MOUTH_Y = 0.70        # mouth line
FACE_CENTER_X = 0.5
FACE_HALF_WIDTH = 0.27  # half the cheek-to-cheek width of a frontal face
CHIN_Y = 0.86         # bottom of the chin of a frontal, neutral face
