// SPDX-License-Identifier: MIT
/*
 * m4npu from C with nothing but the UAPI header and raw syscalls: open a
 * context, optionally load an adapter from a sealed memfd, submit one job
 * through io_uring (IORING_OP_URING_CMD on an SQE128 ring) and read the
 * result from the output buffer.
 *
 *     m4npu-echo TEXT [ADAPTER.m4a]
 *
 * The job is M4NPU_JOB_OP_ECHO: the device copies TEXT to the output.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/io_uring.h>
#include <linux/m4npu.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BUF_SIZE 4096

static int fail(const char *what)
{
	fprintf(stderr, "m4npu-echo: %s: %s\n", what, strerror(errno));
	return 1;
}

/* A buffer object of the context, mapped. */
static void *bo_create(int fd, __u32 *handle)
{
	struct m4npu_bo_create req = { .size = BUF_SIZE };
	void *p;

	if (ioctl(fd, M4NPU_IOC_BO_CREATE, &req))
		return NULL;
	p = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, req.mmap_offset);
	*handle = req.handle;
	return p == MAP_FAILED ? NULL : p;
}

/* The adapter file, copied into a memfd sealed against any change. */
static int adapter_load(int fd, const char *path, __u32 *handle)
{
	struct m4npu_adapter_load req = { 0 };
	char buf[65536];
	ssize_t n;
	int src, mfd;

	src = open(path, O_RDONLY | O_CLOEXEC);
	if (src < 0)
		return -1;
	mfd = memfd_create("m4npu-adapter", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		return -1;
	while ((n = read(src, buf, sizeof(buf))) > 0)
		if (write(mfd, buf, n) != n)
			return -1;
	if (n < 0 || fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		return -1;
	req.fd = mfd;
	req.length = lseek(mfd, 0, SEEK_END);
	if (ioctl(fd, M4NPU_IOC_ADAPTER_LOAD, &req))
		return -1;
	*handle = req.handle;
	close(mfd);
	close(src);
	return 0;
}

/* One SQE128 ring, one job, one completion: returns cqe->res. */
static int run_over_io_uring(int fd, const struct m4npu_job *job, int *res)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SQE128 };
	struct io_uring_sqe *sqes, *sqe;
	struct io_uring_cqe *cqe;
	unsigned *sq_tail, *sq_array, *cq_head;
	void *sq, *cq;
	int ring;

	ring = syscall(__NR_io_uring_setup, 4, &p);
	if (ring < 0)
		return -1;
	sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
	cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
	/* SQE128: each entry is two struct io_uring_sqe long. */
	sqes = mmap(NULL, p.sq_entries * 2 * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED)
		return -1;

	sqe = &sqes[0];
	memset(sqe, 0, 2 * sizeof(*sqe));
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = fd;
	sqe->cmd_op = M4NPU_URING_CMD_RUN;
	sqe->user_data = 42;
	memcpy(sqe->cmd, job, sizeof(*job)); /* 80 bytes: fits the SQE128 command area */

	sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
	sq_array = (unsigned *)((char *)sq + p.sq_off.array);
	sq_array[*sq_tail & (p.sq_entries - 1)] = 0;
	__atomic_store_n(sq_tail, *sq_tail + 1, __ATOMIC_RELEASE);

	if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		return -1;
	cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	cqe = &((struct io_uring_cqe *)((char *)cq + p.cq_off.cqes))[*cq_head & (p.cq_entries - 1)];
	if (cqe->user_data != 42) {
		errno = EPROTO;
		return -1;
	}
	*res = cqe->res;
	__atomic_store_n(cq_head, *cq_head + 1, __ATOMIC_RELEASE);
	close(ring);
	return 0;
}

int main(int argc, char **argv)
{
	struct m4npu_info info;
	struct m4npu_job job = { .op = M4NPU_JOB_OP_ECHO };
	__u32 in_handle, out_handle;
	char *in, *out;
	size_t len;
	int fd, res;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: m4npu-echo TEXT [ADAPTER.m4a]\n");
		return 2;
	}
	fd = open("/dev/" M4NPU_DEVICE_NAME, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return fail("open /dev/" M4NPU_DEVICE_NAME);
	if (ioctl(fd, M4NPU_IOC_GET_INFO, &info))
		return fail("GET_INFO");
	printf("context %llu, uapi %u.%u, model '%s'\n", (unsigned long long)info.context_id,
	       info.uapi_version >> 16, info.uapi_version & 0xffff, info.model_name);
	if (argc == 3) {
		if (adapter_load(fd, argv[2], &job.adapter))
			return fail("loading the adapter");
		printf("adapter %u loaded\n", job.adapter);
	}
	in = bo_create(fd, &in_handle);
	out = bo_create(fd, &out_handle);
	if (!in || !out)
		return fail("BO_CREATE");

	len = strlen(argv[1]);
	if (len == 0 || len > BUF_SIZE) {
		fprintf(stderr, "m4npu-echo: TEXT must be 1 to %d bytes\n", BUF_SIZE);
		return 2;
	}
	memcpy(in, argv[1], len);
	job.input = (struct m4npu_bo_range){ .handle = in_handle, .length = len };
	job.output = (struct m4npu_bo_range){ .handle = out_handle, .length = BUF_SIZE };
	if (run_over_io_uring(fd, &job, &res))
		return fail("io_uring");
	if (res < 0) {
		errno = -res;
		return fail("the job");
	}
	printf("output %d bytes: %.*s\n", res, res, out);
	return 0;
}
