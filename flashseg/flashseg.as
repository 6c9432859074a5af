table flashsegSegments
"flashseg segment calls: BED9+4 with segment and boundary posteriors"
    (
    string chrom;      "Reference sequence (contig) name"
    uint   chromStart; "Segment start, 0-based"
    uint   chromEnd;   "Segment end, exclusive (clipped to the contig length)"
    string name;       "Label of the segment"
    uint   score;      "floor(1000 * seg_post + 0.5)"
    char[1] strand;    "Strand of the label (from the model), . if none"
    uint   thickStart; "Same as chromStart"
    uint   thickEnd;   "Same as chromEnd"
    uint   reserved;   "itemRgb: label colour r,g,b (from the model)"
    float  seg_post;   "Posterior probability of this exact segment (or merged run)"
    float  start_post; "Boundary (or label-change) posterior at the segment start; 1 at contig start"
    float  end_post;   "Boundary (or label-change) posterior at the segment end; 1 at contig end"
    float  label_post; "Mean posterior of the label over the segment's bins"
    )
