/*
 * imgread: decodes an 8-bit grayscale (or RGB, converted to gray) JPEG or PNG to binary PGM on stdout.
 * Used by evaluate.py to read the real COVID-19 slices (../shared/data/covid-slices-train) without Python
 * imaging packages. Build: gcc -O2 -o imgread imgread.c -ljpeg -lpng
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <png.h>

static int write_pgm(unsigned char *gray, unsigned w, unsigned h) {
  printf("P5\n%u %u\n255\n", w, h);
  fwrite(gray, 1, (size_t)w * h, stdout);
  return 0;
}

static int read_jpeg(FILE *f) {
  struct jpeg_decompress_struct cinfo;
  struct jpeg_error_mgr jerr;
  cinfo.err = jpeg_std_error(&jerr);
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_GRAYSCALE;
  jpeg_start_decompress(&cinfo);
  unsigned w = cinfo.output_width, h = cinfo.output_height;
  unsigned char *gray = malloc((size_t)w * h);
  while (cinfo.output_scanline < h) {
    unsigned char *row = gray + (size_t)cinfo.output_scanline * w;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  write_pgm(gray, w, h);
  free(gray);
  return 0;
}

static int read_png(FILE *f) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) return 1;
  png_init_io(png, f);
  png_read_info(png, info);
  png_set_expand(png);
  png_set_strip_16(png);
  png_set_strip_alpha(png);
  if (png_get_color_type(png, info) & PNG_COLOR_MASK_COLOR) png_set_rgb_to_gray_fixed(png, 1, -1, -1);
  png_read_update_info(png, info);
  unsigned w = png_get_image_width(png, info), h = png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != w) { fprintf(stderr, "unexpected PNG layout\n"); return 1; }
  unsigned char *gray = malloc((size_t)w * h);
  png_bytep *rows = malloc(sizeof(png_bytep) * h);
  for (unsigned y = 0; y < h; y++) rows[y] = gray + (size_t)y * w;
  png_read_image(png, rows);
  png_destroy_read_struct(&png, &info, NULL);
  write_pgm(gray, w, h);
  free(rows);
  free(gray);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: imgread FILE.jpg|FILE.png > out.pgm\n"); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 1; }
  unsigned char sig[8];
  size_t n = fread(sig, 1, 8, f);
  rewind(f);
  int rc;
  if (n >= 3 && sig[0] == 0xFF && sig[1] == 0xD8) rc = read_jpeg(f);
  else if (n == 8 && !png_sig_cmp(sig, 0, 8)) rc = read_png(f);
  else { fprintf(stderr, "%s: not a JPEG or PNG\n", argv[1]); rc = 1; }
  fclose(f);
  return rc;
}
