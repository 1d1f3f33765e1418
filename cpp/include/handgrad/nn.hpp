// The layers, one header per Python file of src/handgrad/nn/: each a thin wrapper over functional/,
// whose forward keeps its cache and whose backward turns dL/d(output) into dL/d(input) and adds the
// parameter gradients. Include this for all of them (as `from handgrad import nn`).
#pragma once

#include "handgrad/nn/activation.hpp"
#include "handgrad/nn/container.hpp"
#include "handgrad/nn/conv.hpp"
#include "handgrad/nn/dropout.hpp"
#include "handgrad/nn/init.hpp"
#include "handgrad/nn/linear.hpp"
#include "handgrad/nn/loss.hpp"
#include "handgrad/nn/module.hpp"
#include "handgrad/nn/normalization.hpp"
#include "handgrad/nn/parameter.hpp"
#include "handgrad/nn/pooling.hpp"
#include "handgrad/random.hpp"
