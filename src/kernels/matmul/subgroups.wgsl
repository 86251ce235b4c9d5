// Prepended to kernels that use subgroup built-ins without the reduction snippets: the
// `enable` directive must open the module, before weights.wgsl. Needs the `subgroups` feature.
enable subgroups;
