/* SPDX-License-Identifier: GPL-2.0 */
/* C helpers of the m4npu Rust driver; declared in Rust where used. */
#ifndef M4NPU_HELPERS_H
#define M4NPU_HELPERS_H

#include <linux/types.h>

struct completion;
struct delayed_work;
struct file;
struct page;
struct work_struct;

int m4npu_helper_memfd_seals(struct file *file);
loff_t m4npu_helper_file_size(struct file *file);
void m4npu_helper_init_completion(struct completion *x);
void m4npu_helper_init_delayed_work(struct delayed_work *dwork,
				    void (*func)(struct work_struct *));
void *m4npu_helper_current_files(void);
void m4npu_helper_get_page(struct page *page);

#endif
