/* copyup.h: see fs.h (copyup_*). Kept for the module layout: copy-up brings
 * a lower object into the upper layer, built in the work directory and
 * renamed into place so that a crash never leaves a half copy visible. */
#include "fs.h"
