#ifndef COMPUTEGRID_CZEROMQ_SHIM_H
#define COMPUTEGRID_CZEROMQ_SHIM_H
#include <zmq.h>
#endif
