// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the m4npu Rust driver: static inline functions and struct
 * fields that Linux 6.12's Rust bindings do not expose, in the manner of the
 * kernel's own rust/helpers/.
 */

#include <linux/completion.h>
#include <linux/errno.h>
#include <linux/fs.h>
#include <linux/io_uring/cmd.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/shmem_fs.h>
#include <linux/stddef.h>
#include <linux/workqueue.h>

#include "helpers.h"

/*
 * Seals of a memfd (F_SEAL_*), or -EINVAL when @file is not shmem-backed
 * and so cannot be a sealable memfd. Seals are only ever added, so a seal
 * seen here stays set.
 */
int m4npu_helper_memfd_seals(struct file *file)
{
	if (!shmem_file(file))
		return -EINVAL;
	return READ_ONCE(SHMEM_I(file_inode(file))->seals);
}

loff_t m4npu_helper_file_size(struct file *file)
{
	return i_size_read(file_inode(file));
}

/* init_completion() is a static inline. */
void m4npu_helper_init_completion(struct completion *x)
{
	init_completion(x);
}

/* INIT_DELAYED_WORK() is a macro (with a lockdep class per call site). */
void m4npu_helper_init_delayed_work(struct delayed_work *dwork, work_func_t func)
{
	INIT_DELAYED_WORK(dwork, func);
}

/* The running task's file table, as ->flush() is told of a closer's. */
void *m4npu_helper_current_files(void)
{
	return current->files;
}

/* get_page() is a static inline. */
void m4npu_helper_get_page(struct page *page)
{
	get_page(page);
}

/*
 * Layouts and constants that the Rust side declares by hand, 6.12's
 * bindings lacking them (compat/uring_cmd.rs, compat/miscdevice.rs): a
 * kernel that changes one fails the build here instead of misbehaving at
 * run time. The Rust declarations assert the same numbers.
 */
static_assert(offsetof(struct io_uring_cmd, file) == 0);
static_assert(offsetof(struct io_uring_cmd, sqe) == 8);
static_assert(offsetof(struct io_uring_cmd, task_work_cb) == 16);
static_assert(offsetof(struct io_uring_cmd, cmd_op) == 24);
static_assert(offsetof(struct io_uring_cmd, flags) == 28);
static_assert(offsetof(struct io_uring_cmd, pdu) == 32);
static_assert(sizeof(struct io_uring_cmd) == 64);
static_assert(offsetof(struct io_uring_sqe, cmd) == 48);
static_assert(IO_URING_F_SQE128 == 1 << 8);
static_assert(IO_URING_F_CANCEL == 1 << 11);
static_assert(IO_URING_F_TASK_DEAD == 1 << 13);
static_assert(EIOCBQUEUED == 529);

static_assert(offsetof(struct miscdevice, minor) == 0);
static_assert(offsetof(struct miscdevice, name) == 8);
static_assert(offsetof(struct miscdevice, fops) == 16);
static_assert(offsetof(struct miscdevice, list) == 24);
static_assert(offsetof(struct miscdevice, parent) == 40);
static_assert(offsetof(struct miscdevice, this_device) == 48);
static_assert(offsetof(struct miscdevice, groups) == 56);
static_assert(offsetof(struct miscdevice, nodename) == 64);
static_assert(offsetof(struct miscdevice, mode) == 72);
static_assert(sizeof(struct miscdevice) == 80);
static_assert(MISC_DYNAMIC_MINOR == 255);
