// SPDX-License-Identifier: GPL-2.0-only OR MIT
/*
 * An app in C on libm4npu: classify text or feature vectors through an
 * adapter, embed a sentence, or stream a generation token by token.
 *
 *   m4npu-classify ADAPTER.m4a TEXT                  classify TEXT
 *   m4npu-classify ADAPTER.m4a --features DIM V...   classify feature rows of DIM values
 *   m4npu-classify --embed TEXT                      embedding of TEXT
 *   m4npu-classify --generate PROMPT [MAX_TOKENS [ADAPTER.m4a]]
 *                                                    generation, streamed
 *
 * Build against the installed library:
 *   cc -o m4npu-classify m4npu-classify.c $(pkg-config --cflags --libs m4npu)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <m4npu.h>

static int fail(const char *what, int r)
{
	/* r is -errno; errno and m4npu_last_error() say the same. */
	fprintf(stderr, "m4npu-classify: %s: %s (errno %d, %s)\n", what, m4npu_last_error(), -r, strerror(errno));
	return 1;
}

static int print_token(const char *piece, size_t len, void *user)
{
	(void)user;
	fwrite(piece, 1, len, stdout);
	fflush(stdout);
	return 0;
}

/* The whole file at path, for m4npu_adapter_load (from a buffer). */
static void *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, n = 0, got;
	char *buf = malloc(cap);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			char *bigger = realloc(buf, cap *= 2);
			if (!bigger) {
				free(buf);
				buf = NULL;
			}
			buf = bigger;
		}
	}
	fclose(f);
	*len = n;
	return buf;
}

static int classify(struct m4npu_device *dev, int argc, char **argv)
{
	struct m4npu_adapter *adapter = NULL;
	struct m4npu_label labels[8];
	int r, n;

	/* From a buffer when it can be read here, else from the path (the
	 * library reads it, and says why it cannot). */
	size_t len = 0;
	void *blob = read_file(argv[1], &len);
	if (blob) {
		r = m4npu_adapter_load(dev, blob, len, &adapter);
		free(blob);
	} else {
		r = m4npu_adapter_load_file(dev, argv[1], &adapter);
	}
	if (r < 0)
		return fail("loading the adapter", r);
	printf("adapter %s loaded\n", m4npu_adapter_name(adapter));

	if (argc >= 4 && strcmp(argv[2], "--features") == 0) {
		size_t dim = strtoul(argv[3], NULL, 10), count = (size_t)(argc - 4);
		float *values = calloc(count ? count : 1, sizeof(float));
		if (!values)
			return 1;
		for (size_t i = 0; i < count; i++)
			values[i] = strtof(argv[4 + i], NULL);
		n = m4npu_classify_features(dev, adapter, values, count, dim, labels, 8);
		free(values);
	} else {
		n = m4npu_classify(dev, adapter, argv[2], labels, 8);
	}
	if (n < 0) {
		m4npu_adapter_free(adapter);
		return fail("classifying", n);
	}
	for (int i = 0; i < n && i < 8; i++)
		printf("label %u %s score %.6f logit %.6f\n", labels[i].index,
		       labels[i].name ? labels[i].name : "-", labels[i].score, labels[i].logit);
	m4npu_adapter_free(adapter);
	return 0;
}

int main(int argc, char **argv)
{
	struct m4npu_device *dev = NULL;
	struct m4npu_info info;
	int r, status = 0;

	if (argc < 3) {
		fprintf(stderr, "usage: %s ADAPTER.m4a TEXT | ADAPTER.m4a --features DIM V... | --embed TEXT | --generate PROMPT [MAX_TOKENS [ADAPTER.m4a]]\n", argv[0]);
		return 2;
	}
	r = m4npu_open(NULL, &dev);
	if (r < 0)
		return fail("opening /dev/m4npu", r);
	r = m4npu_device_info(dev, &info);
	if (r < 0) {
		m4npu_close(dev);
		return fail("device info", r);
	}
	printf("libm4npu %s, driver %s, context %llu, model %s\n", m4npu_version(), info.driver_version,
	       (unsigned long long)info.context_id, info.has_model ? info.model_name : "(none)");

	if (strcmp(argv[1], "--embed") == 0) {
		float v[1024];
		int dim = m4npu_embed(dev, argv[2], v, 1024);
		if (dim < 0)
			status = fail("embedding", dim);
		else
			printf("embedding of %d dimensions: %.6f %.6f %.6f ...\n", dim, v[0], v[1], v[2]);
	} else if (strcmp(argv[1], "--generate") == 0) {
		struct m4npu_adapter *adapter = NULL;
		/* Room for prompt and generated tokens together. */
		size_t max_tokens = argc > 3 ? strtoul(argv[3], NULL, 10) : 64;
		if (argc > 4 && (r = m4npu_adapter_load_file(dev, argv[4], &adapter)) < 0) {
			m4npu_close(dev);
			return fail("loading the adapter", r);
		}
		printf("%s", argv[2]);
		int tokens = m4npu_generate(dev, adapter, argv[2], max_tokens, print_token, NULL);
		printf("\n");
		if (tokens < 0)
			status = fail("generating", tokens);
		else
			printf("%d tokens\n", tokens);
		m4npu_adapter_free(adapter);
	} else {
		status = classify(dev, argc, argv);
	}
	m4npu_close(dev);
	return status;
}
